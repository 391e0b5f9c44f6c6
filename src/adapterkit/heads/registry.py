"""head_type -> head class, and building a head from its config dict (AdapterHub's `head_type` names)."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import AdapterConfigError
from .base import PredictionHead
from .classification import (ClassificationHead, ImageClassificationHead, MultiLabelClassificationHead,
                             MultipleChoiceHead, QuestionAnsweringHead, TaggingHead)
from .language_modeling import CausalLMHead, MaskedLMHead, Seq2SeqLMHead

HEAD_TYPES: dict[str, type[PredictionHead]] = {
    cls.head_type: cls
    for cls in (ClassificationHead, MultiLabelClassificationHead, TaggingHead, MultipleChoiceHead,
                QuestionAnsweringHead, ImageClassificationHead, CausalLMHead, MaskedLMHead, Seq2SeqLMHead)
}


def head_class(head_type: Any) -> type[PredictionHead]:
    try:
        return HEAD_TYPES[head_type]
    except (KeyError, TypeError):
        raise AdapterConfigError(
            f"unknown head_type {head_type!r}; supported: {', '.join(sorted(HEAD_TYPES))}"
        ) from None


def build_head(name: str, config: Mapping[str, Any], model_config) -> PredictionHead:
    """A new head `name` from a config dict (must hold `head_type`), sized for `model_config`."""
    if not isinstance(config, Mapping) or "head_type" not in config:
        raise AdapterConfigError(f"head {name!r}: a head config must be a dict with a 'head_type' key, got {config!r}")
    return head_class(config["head_type"])(name, config, model_config)
