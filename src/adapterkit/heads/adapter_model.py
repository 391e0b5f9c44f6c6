"""`AdapterModel`: a transformers base model (`model.<base_model_prefix>`) with flexible prediction heads.

One generic class serves every architecture: `adapter_model_class` derives `<Arch>AdapterModel` from the
architecture's `<Arch>PreTrainedModel` (so `save_pretrained` / `from_pretrained`, weight init and the Trainer
work as for any transformers model). The adapter API comes from `AdapterModelMixin` (`adapterkit.init` runs in
`__init__`), the heads live in `model.heads`, and their configs in `config.prediction_heads` (AdapterHub's
key) so a saved model rebuilds them.

Heads own their files: `save_adapter` / `load_adapter` are extended here to save and load the head named like
the adapter (heads/io.py), so the checkpoint layer (adapterkit.io) never imports heads; it only runs the
`after_add` callback this class gives its `load_adapter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch.nn as nn

from ..blocks import Stack
from ..context import AdapterSetup, current_override
from ..errors import AdapterError
from ..io import checkpoint, hub, peft
from ..interfaces import get_interface
from ..io.staging import one_commit
from ..model import AdapterModelMixin, init
from ..naming import check_adapter_name
from . import io as head_io
from .averaging import average_head
from .base import PredictionHead, label2id_from
from .registry import build_head

_SETTINGS = "adapterkit"  # config attribute holding adapter configs and the active setup for save_pretrained


class AdapterModel(AdapterModelMixin):
    """Mixin of the generated `<Arch>AdapterModel` classes (listed before `<Arch>PreTrainedModel`)."""

    _base_model_class: ClassVar[type]
    # The files a Hub load fetches for one adapter: the adapter's and its head's.
    hub_files: ClassVar[tuple[str, ...]] = hub.ADAPTER_FILES + head_io.HEAD_FILES
    # Head losses are per-batch means: the Trainer must scale them for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config, *, interface=None, base_model: nn.Module | None = None):
        super().__init__(config)
        setattr(self, self.base_model_prefix,
                base_model if base_model is not None else self._base_model_class(config))
        self.heads = nn.ModuleDict()
        self._active_head: str | None = None
        init(self, interface or get_interface(config.model_type))  # flexible heads need the interface
        self.post_init()
        # After post_init, so transformers' weight init never re-initialises adapters or (tied) heads.
        settings = dict(getattr(config, _SETTINGS, None) or {})
        for name, adapter_config in (settings.get("adapters") or {}).items():
            self.add_adapter(name, adapter_config)
        for name, head_config in dict(getattr(config, "prediction_heads", None) or {}).items():
            self.add_prediction_head(build_head(name, head_config, config), overwrite_ok=True, set_active=False)
        if settings.get("active_adapters"):
            self.set_active_adapters(settings["active_adapters"])
        if settings.get("active_head") in self.heads:
            self._active_head = settings["active_head"]

    # -- adding and removing heads -----------------------------------------------------------------
    def add_prediction_head(self, head: PredictionHead, overwrite_ok: bool = False, set_active: bool = True) -> None:
        """Install a built head under `head.name`; LM decoders are tied to the input embeddings if the config ties."""
        check_adapter_name(head.name, role=" for a prediction head")
        if head.name in self.heads and not overwrite_ok:
            raise AdapterError(
                f"a head named {head.name!r} already exists; pick another name, delete_head it first, "
                "or pass overwrite_ok=True"
            )
        param = next(self.base_model.parameters(), None)
        if param is not None:
            head.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
        embeddings = self.tied_input_embeddings() if hasattr(head, "tie_to") else None
        if embeddings is not None:
            head.tie_to(embeddings)  # raises on a size mismatch, before the model changes
        if head.name in self.heads:
            self.delete_head(head.name)
        if embeddings is not None:
            self._register_tied(head)
        head.train(self.training)
        self.heads[head.name] = head
        if getattr(self.config, "prediction_heads", None) is None:
            self.config.prediction_heads = {}
        self.config.prediction_heads[head.name] = head.config
        if set_active:
            self._active_head = head.name

    def add_prediction_head_from_config(self, head_name: str, config: dict, overwrite_ok: bool = False,
                                        set_active: bool = True) -> None:
        """A head from a config dict with a `head_type` (AdapterHub's `head_config.json["config"]` form)."""
        self.add_prediction_head(build_head(head_name, config, self.config), overwrite_ok, set_active)

    def _add(self, head_type: str, name: str, overwrite_ok: bool, set_active: bool = True, **config) -> None:
        self.add_prediction_head_from_config(name, {"head_type": head_type, **config}, overwrite_ok, set_active)

    def add_classification_head(self, head_name: str, num_labels: int = 2, layers: int = 2,
                                activation_function: str | None = "tanh", overwrite_ok: bool = False,
                                multilabel: bool = False, id2label: dict | None = None, use_pooler: bool = False,
                                dropout_prob: float | None = None, bias: bool = True) -> None:
        """Sequence classification; `num_labels=1` is regression (MSE), `multilabel=True` uses BCE."""
        self._add("multilabel_classification" if multilabel else "classification", head_name, overwrite_ok,
                  num_labels=num_labels, layers=layers, activation_function=activation_function,
                  label2id=label2id_from(id2label), use_pooler=use_pooler, dropout_prob=dropout_prob, bias=bias)

    def add_image_classification_head(self, head_name: str, num_labels: int = 2, layers: int = 1,
                                      activation_function: str | None = "tanh", overwrite_ok: bool = False,
                                      multilabel: bool = False, id2label: dict | None = None,
                                      use_pooler: bool = False, dropout_prob: float | None = None) -> None:
        self._add("image_classification", head_name, overwrite_ok, num_labels=num_labels, layers=layers,
                  activation_function=activation_function, multilabel=multilabel, label2id=label2id_from(id2label),
                  use_pooler=use_pooler, dropout_prob=dropout_prob)

    def add_tagging_head(self, head_name: str, num_labels: int = 2, layers: int = 1,
                         activation_function: str | None = "tanh", overwrite_ok: bool = False,
                         id2label: dict | None = None, dropout_prob: float | None = None) -> None:
        """Token classification (one label per token)."""
        self._add("tagging", head_name, overwrite_ok, num_labels=num_labels, layers=layers,
                  activation_function=activation_function, label2id=label2id_from(id2label),
                  dropout_prob=dropout_prob)

    def add_multiple_choice_head(self, head_name: str, num_choices: int = 2, layers: int = 2,
                                 activation_function: str | None = "tanh", overwrite_ok: bool = False,
                                 id2label: dict | None = None, use_pooler: bool = False,
                                 dropout_prob: float | None = None) -> None:
        """Inputs shaped (batch, choices, length); logits (batch, choices)."""
        self._add("multiple_choice", head_name, overwrite_ok, num_choices=num_choices, layers=layers,
                  activation_function=activation_function, label2id=label2id_from(id2label),
                  use_pooler=use_pooler, dropout_prob=dropout_prob)

    def add_qa_head(self, head_name: str, num_labels: int = 2, layers: int = 1,
                    activation_function: str | None = "tanh", overwrite_ok: bool = False,
                    id2label: dict | None = None, dropout_prob: float | None = None) -> None:
        """Extractive QA: start/end logits; labels are `start_positions` / `end_positions`."""
        self._add("question_answering", head_name, overwrite_ok, num_labels=num_labels, layers=layers,
                  activation_function=activation_function, label2id=label2id_from(id2label),
                  dropout_prob=dropout_prob)

    def add_masked_lm_head(self, head_name: str, activation_function: str | None = "gelu", layers: int = 2,
                           overwrite_ok: bool = False) -> None:
        self._add("masked_lm", head_name, overwrite_ok, activation_function=activation_function, layers=layers)

    def add_causal_lm_head(self, head_name: str, activation_function: str | None = "gelu", layers: int = 2,
                           overwrite_ok: bool = False) -> None:
        """Next-token prediction (labels shifted inside); as AdapterHub: LayerNorm and a decoder bias."""
        self._add("causal_lm", head_name, overwrite_ok, activation_function=activation_function, layers=layers,
                  layer_norm=True, bias=True)

    def add_seq2seq_lm_head(self, head_name: str, layers: int = 1, overwrite_ok: bool = False) -> None:
        """LM head over the decoder of an encoder-decoder model; decoder inputs come from labels if not given."""
        if not getattr(self.config, "is_encoder_decoder", False):
            raise AdapterError(
                f"a seq2seq LM head needs an encoder-decoder model; {type(self.config).__name__} is not one "
                "(use add_causal_lm_head or add_masked_lm_head)"
            )
        self._add("seq2seq_lm", head_name, overwrite_ok, layers=layers)

    def average_head(self, head_name: str, head_list, weights=None, normalize_weights: bool = True,
                     overwrite_ok: bool = False, set_active: bool = False) -> None:
        """Add `head_name` as the weighted average of heads of one type and config (`head_list`: names, or a dict
        name -> weight; default weights equal, normalised to sum 1), as the `adapters` package; see averaging.py."""
        average_head(self, head_name, head_list, weights, normalize_weights, overwrite_ok, set_active)

    def delete_head(self, head_name: str) -> None:
        self._require_head(head_name)
        del self.heads[head_name]
        self.config.prediction_heads.pop(head_name, None)
        for key in [k for k in getattr(self, "all_tied_weights_keys", {}) if k.startswith(f"heads.{head_name}.")]:
            del self.all_tied_weights_keys[key]
        if self._active_head == head_name:
            self._active_head = None

    def _require_head(self, head_name: str) -> PredictionHead:
        if head_name not in self.heads:
            raise AdapterError(
                f"head {head_name!r} does not exist on this model; heads: "
                f"{', '.join(map(repr, self.heads)) or '(none)'}"
            )
        return self.heads[head_name]

    def tied_input_embeddings(self) -> nn.Module | None:
        """The input embeddings LM decoders are tied to, or None when the config does not tie them."""
        return self.get_input_embeddings() if getattr(self.config, "tie_word_embeddings", False) else None

    def _register_tied(self, head: PredictionHead) -> None:
        """Tell transformers the decoder is tied (save_pretrained drops it, from_pretrained re-ties it)."""
        embedding = self.get_input_embeddings().weight
        source = next(n for n, p in self.named_parameters(remove_duplicate=False) if p is embedding
                      and not n.startswith("heads."))
        tied = getattr(self, "all_tied_weights_keys", None)
        if tied is not None:
            for key in head.tied_parameters():
                tied[f"heads.{head.name}.{key}"] = source

    # -- the active head ---------------------------------------------------------------------------
    @property
    def active_head(self) -> str | None:
        """The head `forward` uses (None: return the base model's outputs)."""
        return self._active_head

    @active_head.setter
    def active_head(self, head_name: str | None) -> None:
        if head_name is not None:
            if not isinstance(head_name, str):
                raise AdapterError(f"active_head must be a head name or None, got {type(head_name).__name__}; "
                                   "several heads at once are not supported yet")
            self._require_head(head_name)
        self._active_head = head_name

    def set_active_adapters(self, adapter_setup, skip_layers=None) -> None:
        """As `AdapterModelMixin.set_active_adapters`; a head named like the (last) adapter becomes active too."""
        super().set_active_adapters(adapter_setup, skip_layers)
        head = _head_of(self.adapter_state.active, self.heads)
        if head is not None:
            self._active_head = head

    def get_labels_dict(self, head_name: str | None = None) -> dict[int, str] | None:
        head = self._require_head(head_name or self._active_head or "")
        return {int(i): label for label, i in head.label2id.items()} if head.label2id else None

    def get_labels(self, head_name: str | None = None) -> list[str] | None:
        labels = self.get_labels_dict(head_name)
        return list(labels.values()) if labels else None

    # -- saving and loading heads ------------------------------------------------------------------
    def save_head(self, save_directory: str, head_name: str) -> None:
        head_io.save_head(self, save_directory, head_name)

    def load_head(self, save_directory: str, load_as: str | None = None, set_active: bool = True) -> str:
        return head_io.load_head(self, save_directory, load_as, set_active=set_active)

    # Heads own their files: the adapter API is extended here, adapterkit.io knows nothing of heads.
    def save_adapter(self, save_directory, adapter_name: str, with_head: bool = True, format: str = "adapterkit",
                     safetensors: bool = True) -> None:
        """As `AdapterModelMixin.save_adapter`, then the head named like the adapter (if there is one and
        `with_head`) into the same directory, in one commit; PEFT checkpoints never carry a head."""
        with one_commit(save_directory):
            super().save_adapter(save_directory, adapter_name, with_head=with_head, format=format,
                                 safetensors=safetensors)
            if with_head and format != peft.FORMAT and adapter_name in self.heads:
                head_io.save_head(self, Path(save_directory), adapter_name)

    def load_adapter(self, path, load_as: str | None = None, set_active: bool = False, format: str | None = None,
                     with_head: bool = True, overwrite_ok: bool = False, **hub_options) -> str:
        """As `AdapterModelMixin.load_adapter` (a Hub repo id too: its head files are fetched with the adapter's),
        and with `with_head` the directory's head (if any; never for a PEFT checkpoint) under the adapter's name,
        once the adapter is in; the head is validated before it is added, and if it fails the adapter is taken out
        again: on any error the model is unchanged."""
        source, path = path, hub.resolve_path(path, self.hub_files, **hub_options)

        def load_head_too(name: str, ckpt) -> None:
            if with_head and ckpt.format != peft.FORMAT and head_io.has_head(path):
                head_io.load_head(self, Path(path), load_as=name, set_active=set_active)

        return checkpoint.load_adapter(self, path, load_as=load_as, set_active=set_active, format=format,
                                       overwrite_ok=overwrite_ok, after_add=load_head_too,
                                       folder_name=hub.folder_name(source, hub_options.get("subfolder")))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save_pretrained; adapter configs and the active setup go into config.json too."""
        state = self.adapter_state
        setattr(self.config, _SETTINGS, {
            "adapters": {name: config.to_dict() for name, config in state.configs.items()},
            "active_adapters": state.active.flatten() if isinstance(state.active, Stack) else None,
            "active_head": self._active_head,
        })
        return super().save_pretrained(save_directory, *args, **kwargs)

    # -- forward -----------------------------------------------------------------------------------
    def _used_head(self, head: str | None) -> PredictionHead | None:
        if head is not None:
            return self._require_head(head)
        override = current_override()
        if override is not None and override is not AdapterSetup._NONE:
            name = _head_of(override, self.heads)
            if name is not None:
                return self.heads[name]
        return self.heads[self._active_head] if self._active_head is not None else None

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, pixel_values=None, decoder_input_ids=None, decoder_attention_mask=None,
                labels=None, start_positions=None, end_positions=None, head: str | None = None,
                return_dict: bool | None = None, **kwargs):
        """The base model, then the active head (or `head=`); a loss when labels are given.

        Without any head the base model's outputs are returned unchanged.
        """
        used = self._used_head(head)
        named = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     position_ids=position_ids, inputs_embeds=inputs_embeds, pixel_values=pixel_values,
                     decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask)
        inputs = {**{k: v for k, v in named.items() if v is not None}, **kwargs}
        if used is None:
            if labels is not None or start_positions is not None:
                raise AdapterError("labels were given but no prediction head is active; add a head, set "
                                   "model.active_head or pass head=<name>")
            return self.base_model(**inputs, return_dict=return_dict)
        inputs, head_kwargs = used.prepare_base_inputs(inputs, labels, self.config)
        outputs = self.base_model(**inputs, return_dict=True)
        invertible = self.adapter_state.active_at(("model", "invertible"))
        out = used(outputs, attention_mask=inputs.get("attention_mask"), labels=labels,
                   start_positions=start_positions, end_positions=end_positions,
                   invertible=invertible[0] if invertible else None, **head_kwargs)
        if return_dict is False or (return_dict is None and not getattr(self.config, "return_dict", True)):
            return out.to_tuple()
        return out


def _head_of(setup, heads) -> str | None:
    """The head named like the last adapter of a Stack (AdapterHub's rule), if there is one."""
    if not isinstance(setup, Stack) or not setup.children:
        return None
    last = setup.children[-1]
    name = last if isinstance(last, str) else None
    return name if name is not None and name in heads else None


__all__ = ["AdapterModel"]
