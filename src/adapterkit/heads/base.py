"""The prediction-head base class: a config dict, numbered layers, and the helpers every head shares.

Heads are `nn.Sequential`s whose children are numbered like the `adapters` package's flexible heads
(`0` dropout, `1` linear, `2` activation, ...), so AdapterHub head weights (`heads.<name>.1.weight`) load by
name. The config is a plain JSON-able dict with AdapterHub's keys (`head_type`, `num_labels`, `layers`,
`activation_function`, `label2id`, ...), saved as is in `head_config.json`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import torch
import torch.nn as nn
from transformers.utils import ModelOutput

from ..errors import AdapterConfigError, AdapterError
from ..nn.activations import activation
from .checks import check_head_config


def hidden_size_of(model_config) -> int:
    size = getattr(model_config, "hidden_size", None) or getattr(model_config, "d_model", None)
    if size is None:
        raise AdapterError(f"{type(model_config).__name__} has neither hidden_size nor d_model; cannot size a head")
    return size



class PredictionHead(nn.Sequential):
    """A named head built from `config`; subclasses set `head_type`, `defaults` and `forward`.

    `defaults` lists every config key the head accepts (with its default); other keys are rejected, so a
    misspelt option or a head config of another kind never loads half-understood.
    """

    head_type: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    label_names: ClassVar[tuple[str, ...]] = ("labels",)

    def __init__(self, name: str, config: Mapping[str, Any], model_config):
        super().__init__()
        self.name = name
        self.config = self.complete_config(config)
        for index, module in enumerate(self.build(model_config)):
            self.add_module(str(index), module)
        std = getattr(model_config, "initializer_range", None) or 0.02
        self.apply(lambda m: _init_module(m, std))

    # -- config ------------------------------------------------------------------------------------
    @classmethod
    def complete_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        config = dict(config)
        head_type = config.pop("head_type", cls.head_type)
        if head_type != cls.head_type:
            raise AdapterConfigError(f"{cls.__name__} builds {cls.head_type!r} heads, not {head_type!r}")
        unknown = sorted(set(config) - set(cls.defaults))
        if unknown:
            raise AdapterConfigError(
                f"unknown key(s) {', '.join(map(repr, unknown))} for a {cls.head_type} head; "
                f"allowed: {', '.join(sorted(cls.defaults))}"
            )
        out = {"head_type": cls.head_type, **cls.defaults, **config}
        check_head_config(cls.head_type, out)
        return out

    def build(self, model_config) -> list[nn.Module]:
        raise NotImplementedError

    # -- shared pieces -----------------------------------------------------------------------------
    def dropout_prob(self, model_config) -> float:
        """The head's own `dropout_prob`, else the model's classifier dropout, else its hidden dropout, else 0."""
        for value in (self.config.get("dropout_prob"), getattr(model_config, "classifier_dropout", None),
                      getattr(model_config, "hidden_dropout_prob", None)):
            if value is not None:
                return float(value)
        return 0.0

    def mlp(self, model_config, out_features: int) -> list[nn.Module]:
        """`layers` x (dropout, linear), hidden-to-hidden linears followed by the activation (AdapterHub layout)."""
        hidden = hidden_size_of(model_config)
        p = self.dropout_prob(model_config)
        act = self.config.get("activation_function")
        modules: list[nn.Module] = []
        for i in range(self.config["layers"]):
            modules.append(nn.Dropout(p))
            if i < self.config["layers"] - 1:
                modules.append(nn.Linear(hidden, hidden))
                if act:
                    modules.append(activation(act))
            else:
                modules.append(nn.Linear(hidden, out_features, bias=self.config.get("bias", True)))
        return modules

    def sequence_summary(self, outputs, cls_output: torch.Tensor | None) -> torch.Tensor:
        """One vector per sequence: given, the base model's pooled output (`use_pooler`), or the first token."""
        if cls_output is not None:
            return cls_output
        if self.config.get("use_pooler"):
            pooled = getattr(outputs, "pooler_output", None)
            if pooled is None:
                raise AdapterError(
                    f"head {self.name!r} has use_pooler=True but the base model returned no pooler_output"
                )
            return pooled
        return outputs[0][:, 0]

    def prepare_base_inputs(self, inputs: dict[str, Any], labels, model_config) -> tuple[dict, dict]:
        """Adjust the base model's inputs before it runs (hook); returns (inputs, extra head kwargs)."""
        return inputs, {}

    def tied_parameters(self) -> list[str]:
        """Parameter names tied to the model's input embeddings (LM decoders); never saved with the head."""
        return []

    @property
    def label2id(self) -> dict | None:
        return self.config.get("label2id")


def label2id_from(id2label: Mapping | None) -> dict | None:
    return {str(label): int(i) for i, label in id2label.items()} if id2label else None


def make_output(output_cls: type[ModelOutput], base_outputs, **values) -> ModelOutput:
    """`output_cls(**values)` plus whatever of the base outputs that class has a field for (hidden states, ...)."""
    names = {f.name for f in dataclasses.fields(output_cls)}
    passthrough = {k: v for k, v in base_outputs.items() if k in names and k not in values}
    return output_cls(**values, **passthrough)


def is_seq2seq_output(outputs) -> bool:
    return "encoder_last_hidden_state" in getattr(type(outputs), "__dataclass_fields__", {})


def _init_module(module: nn.Module, std: float) -> None:
    """N(0, initializer_range) linear weights, zero biases, unit layer norms (the transformers default)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
