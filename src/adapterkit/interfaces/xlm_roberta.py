"""XLM-RoBERTa: RoBERTa's layout under its own model type."""

from .registry import register_interface
from .roberta import ROBERTA

XLM_ROBERTA = register_interface(ROBERTA.with_model_types("xlm-roberta"))
