"""Gemma 3 (text): Gemma 2's layer layout."""

from .gemma2 import GEMMA2
from .registry import register_interface

GEMMA3_TEXT = register_interface(GEMMA2.with_model_types("gemma3_text"))
