"""Classification-style heads: sequence (single-, multi-label, regression), token, multiple choice, QA, image.

Layouts and losses follow the `adapters` package's flexible heads, so their weights and behaviour carry over.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.modeling_outputs import (ImageClassifierOutput, MultipleChoiceModelOutput,
                                           QuestionAnsweringModelOutput, Seq2SeqQuestionAnsweringModelOutput,
                                           Seq2SeqSequenceClassifierOutput, SequenceClassifierOutput,
                                           TokenClassifierOutput)

from ..errors import AdapterError
from .base import PredictionHead, is_seq2seq_output, make_output

_COMMON = {"layers": 2, "activation_function": "tanh", "label2id": None, "dropout_prob": None}


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int, multilabel: bool) -> torch.Tensor:
    """MSE for one label (regression), BCE-with-logits for multi-label, cross-entropy otherwise."""
    if num_labels == 1:
        return F.mse_loss(logits.view(-1), labels.view(-1).to(logits.dtype))
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))


class ClassificationHead(PredictionHead):
    """One label per sequence from the first token (or the pooled output); regression when num_labels == 1."""

    head_type = "classification"
    defaults = {**_COMMON, "num_labels": 2, "use_pooler": False, "bias": True}
    multilabel = False

    def build(self, model_config) -> list[nn.Module]:
        return self.mlp(model_config, self.config["num_labels"])

    def forward(self, outputs, cls_output=None, attention_mask=None, labels=None, **kwargs):
        logits = super().forward(self.sequence_summary(outputs, cls_output))
        loss = None
        if labels is not None:
            loss = sequence_loss(logits, labels, self.config["num_labels"], self.multilabel)
        cls = Seq2SeqSequenceClassifierOutput if is_seq2seq_output(outputs) else SequenceClassifierOutput
        return make_output(cls, outputs, loss=loss, logits=logits)


class MultiLabelClassificationHead(ClassificationHead):
    """Independent binary labels per sequence (BCE-with-logits loss)."""

    head_type = "multilabel_classification"
    multilabel = True


class ImageClassificationHead(ClassificationHead):
    """A classification head over a vision model's first token / pooled output; `multilabel` switches to BCE."""

    head_type = "image_classification"
    defaults = {**ClassificationHead.defaults, "layers": 1, "multilabel": False}

    def forward(self, outputs, cls_output=None, attention_mask=None, labels=None, **kwargs):
        logits = nn.Sequential.forward(self, self.sequence_summary(outputs, cls_output))
        loss = None
        if labels is not None:
            loss = sequence_loss(logits, labels, self.config["num_labels"], bool(self.config["multilabel"]))
        return make_output(ImageClassifierOutput, outputs, loss=loss, logits=logits)


class TaggingHead(PredictionHead):
    """One label per token; padded positions (attention_mask 0) do not count in the loss."""

    head_type = "tagging"
    defaults = {**_COMMON, "layers": 1, "num_labels": 2}

    def build(self, model_config) -> list[nn.Module]:
        return self.mlp(model_config, self.config["num_labels"])

    def forward(self, outputs, cls_output=None, attention_mask=None, labels=None, **kwargs):
        logits = super().forward(outputs[0])
        loss = None
        if labels is not None:
            labels = labels.view(-1)
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask.reshape(-1) != 1, -100)
            loss = F.cross_entropy(logits.view(-1, self.config["num_labels"]), labels, ignore_index=-100)
        return make_output(TokenClassifierOutput, outputs, loss=loss, logits=logits)


class MultipleChoiceHead(PredictionHead):
    """A score per (example, choice); inputs come as (batch, choices, length) and run flattened."""

    head_type = "multiple_choice"
    defaults = {**_COMMON, "num_choices": 2, "use_pooler": False}

    def build(self, model_config) -> list[nn.Module]:
        return self.mlp(model_config, 1)

    def prepare_base_inputs(self, inputs, labels, model_config):
        reference = inputs.get("input_ids", inputs.get("inputs_embeds"))
        if reference is None:
            return inputs, {}
        choices_dim = reference.dim() == (3 if "input_ids" in inputs else 4)
        if not choices_dim:
            return inputs, {}
        num_choices = reference.shape[1]
        flat = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and key == "inputs_embeds":
                flat[key] = value.reshape(-1, *value.shape[-2:])
            elif isinstance(value, torch.Tensor) and value.dim() >= 3 and value.shape[1] == num_choices:
                flat[key] = value.reshape(-1, value.shape[-1])
            else:
                flat[key] = value
        return flat, {"num_choices": num_choices}

    def forward(self, outputs, cls_output=None, attention_mask=None, labels=None, num_choices=None, **kwargs):
        scores = super().forward(self.sequence_summary(outputs, cls_output))
        num_choices = num_choices or self.config["num_choices"]
        if scores.shape[0] % num_choices:
            raise AdapterError(
                f"multiple-choice head {self.name!r}: {scores.shape[0]} sequences are not a multiple of "
                f"{num_choices} choices; pass inputs shaped (batch, choices, length)"
            )
        logits = scores.view(-1, num_choices)
        loss = F.cross_entropy(logits, labels.view(-1)) if labels is not None else None
        return make_output(MultipleChoiceModelOutput, outputs, loss=loss, logits=logits)


class QuestionAnsweringHead(PredictionHead):
    """Start and end logits per token; the loss averages start and end cross-entropy."""

    head_type = "question_answering"
    defaults = {**_COMMON, "layers": 1, "num_labels": 2}
    label_names = ("start_positions", "end_positions")

    def build(self, model_config) -> list[nn.Module]:
        if self.config["num_labels"] != 2:
            raise AdapterError(f"question-answering head {self.name!r} needs num_labels=2 (start and end)")
        return self.mlp(model_config, 2)

    def forward(self, outputs, cls_output=None, attention_mask=None, labels=None, start_positions=None,
                end_positions=None, **kwargs):
        logits = super().forward(outputs[0])
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # positions outside the input are clamped there and ignored
            start = start_positions.reshape(-1).clamp(0, ignored)
            end = end_positions.reshape(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
        cls = Seq2SeqQuestionAnsweringModelOutput if is_seq2seq_output(outputs) else QuestionAnsweringModelOutput
        return make_output(cls, outputs, loss=loss, start_logits=start_logits, end_logits=end_logits)
