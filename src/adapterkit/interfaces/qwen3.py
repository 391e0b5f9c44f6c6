"""Qwen3: Llama's layer layout (plus q/k norms inside the attention, which change no site)."""

from .llama import LLAMA
from .registry import register_interface

QWEN3 = register_interface(LLAMA.with_model_types("qwen3"))
