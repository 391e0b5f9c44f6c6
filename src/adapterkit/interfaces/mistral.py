"""Mistral: Llama's layer layout."""

from .llama import LLAMA
from .registry import register_interface

MISTRAL = register_interface(LLAMA.with_model_types("mistral"))
