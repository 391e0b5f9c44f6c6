"""Language-modelling heads: causal, masked and sequence-to-sequence.

Layout as the `adapters` package's LM heads: `layers - 1` x (linear, activation, optional LayerNorm), then the
vocabulary projection, which is tied to the input embeddings when the model config ties word embeddings.
An active invertible (NICE) adapter is inverted right before that projection.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutput, CausalLMOutputWithPast, MaskedLMOutput, Seq2SeqLMOutput

from ..errors import AdapterError
from ..nn.activations import activation
from .base import PredictionHead, hidden_size_of, make_output


class CausalLMHead(PredictionHead):
    head_type = "causal_lm"
    defaults = {"vocab_size": None, "embedding_size": None, "layers": 1, "activation_function": None,
                "layer_norm": False, "bias": False, "shift_labels": True, "label2id": None, "dropout_prob": None}

    def build(self, model_config) -> list[nn.Module]:
        hidden = hidden_size_of(model_config)
        if self.config["vocab_size"] is None:
            self.config["vocab_size"] = model_config.vocab_size
        if self.config.get("embedding_size", None) is None and "embedding_size" in self.defaults:
            self.config["embedding_size"] = getattr(model_config, "embedding_size", None) or hidden
        embedding = self.config.get("embedding_size") or hidden
        act = self.config["activation_function"]
        modules: list[nn.Module] = []
        for i in range(self.config["layers"] - 1):
            modules.append(nn.Linear(hidden if i == 0 else embedding, embedding))
            if act:
                modules.append(activation(act))
            if self.config["layer_norm"]:
                modules.append(nn.LayerNorm(embedding, eps=getattr(model_config, "layer_norm_eps", 1e-12)))
        modules.append(nn.Linear(embedding, self.config["vocab_size"], bias=self.config["bias"]))
        return modules

    @property
    def decoder(self) -> nn.Linear:
        return self[len(self) - 1]

    def tied_parameters(self) -> list[str]:
        return [f"{len(self) - 1}.weight"] if getattr(self, "_tied", False) else []

    def tie_to(self, embeddings: nn.Embedding) -> None:
        if tuple(embeddings.weight.shape) != tuple(self.decoder.weight.shape):
            raise AdapterError(
                f"LM head {self.name!r}: decoder {tuple(self.decoder.weight.shape)} cannot be tied to input "
                f"embeddings {tuple(embeddings.weight.shape)}"
            )
        self.decoder.weight = embeddings.weight
        self._tied = True
        # transformers' save_pretrained accepts shared tensors only where `_tied_weights_keys` declares them.
        self._tied_weights_keys = {key: "input_embeddings" for key in self.tied_parameters()}

    def logits(self, hidden: torch.Tensor, invertible=None) -> torch.Tensor:
        for i in range(len(self) - 1):
            hidden = self[i](hidden)
        if invertible is not None:
            hidden = invertible(hidden, rev=True)
        return self.decoder(hidden)

    def lm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config["shift_labels"]:
            logits, labels = logits[..., :-1, :], labels[..., 1:]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)

    def make(self, loss, logits, outputs):
        cls = CausalLMOutputWithPast if outputs.get("past_key_values") is not None else CausalLMOutput
        return make_output(cls, outputs, loss=loss, logits=logits)

    def forward(self, outputs, cls_output=None, attention_mask=None, labels=None, invertible=None, **kwargs):
        logits = self.logits(outputs[0], invertible)
        loss = self.lm_loss(logits, labels) if labels is not None else None
        return self.make(loss, logits, outputs)


class MaskedLMHead(CausalLMHead):
    """BERT-style masked LM head (dense, activation, LayerNorm, decoder); labels are not shifted."""

    head_type = "masked_lm"
    defaults = {**CausalLMHead.defaults, "layers": 2, "activation_function": "gelu", "layer_norm": True,
                "bias": True, "shift_labels": False}

    def make(self, loss, logits, outputs):
        return make_output(MaskedLMOutput, outputs, loss=loss, logits=logits)


class Seq2SeqLMHead(CausalLMHead):
    """Decoder-side LM head of an encoder-decoder model; labels also give the decoder inputs when none are passed."""

    head_type = "seq2seq_lm"
    defaults = {k: v for k, v in CausalLMHead.defaults.items() if k not in ("embedding_size", "dropout_prob")}
    defaults["shift_labels"] = False

    def prepare_base_inputs(self, inputs, labels, model_config):
        if labels is None or inputs.get("decoder_input_ids") is not None or \
                inputs.get("decoder_inputs_embeds") is not None:
            return inputs, {}
        start = getattr(model_config, "decoder_start_token_id", None)
        pad = getattr(model_config, "pad_token_id", None)
        if start is None or pad is None:
            raise AdapterError(
                f"seq2seq LM head {self.name!r}: pass decoder_input_ids (the model config has no "
                "decoder_start_token_id / pad_token_id to derive them from labels)"
            )
        shifted = labels.new_full(labels.shape, start)
        shifted[..., 1:] = labels[..., :-1]
        return {**inputs, "decoder_input_ids": shifted.masked_fill(shifted == -100, pad)}, {}

    def make(self, loss, logits, outputs):
        return make_output(Seq2SeqLMOutput, outputs, loss=loss, logits=logits)
