"""Flexible prediction heads and `AutoAdapterModel` (a base model + adapters + named heads)."""

from .adapter_model import AdapterModel
from .auto import AutoAdapterModel, adapter_model_class, from_task_model
from .base import PredictionHead
from .classification import (ClassificationHead, ImageClassificationHead, MultiLabelClassificationHead,
                             MultipleChoiceHead, QuestionAnsweringHead, TaggingHead)
from .language_modeling import CausalLMHead, MaskedLMHead, Seq2SeqLMHead
from .registry import HEAD_TYPES, build_head

__all__ = ["AdapterModel", "AutoAdapterModel", "adapter_model_class", "from_task_model", "PredictionHead",
           "ClassificationHead", "MultiLabelClassificationHead", "TaggingHead", "MultipleChoiceHead",
           "QuestionAnsweringHead", "ImageClassificationHead", "CausalLMHead", "MaskedLMHead", "Seq2SeqLMHead",
           "HEAD_TYPES", "build_head"]
