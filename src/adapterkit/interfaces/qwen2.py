"""Qwen2: Llama's layer layout (with biases on q/k/v, which LoRA and (IA)^3 handle as any bias)."""

from .llama import LLAMA
from .registry import register_interface

QWEN2 = register_interface(LLAMA.with_model_types("qwen2"))
