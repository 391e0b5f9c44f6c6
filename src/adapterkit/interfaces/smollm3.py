"""SmolLM3: Llama's layer layout."""

from .llama import LLAMA
from .registry import register_interface

SMOLLM3 = register_interface(LLAMA.with_model_types("smollm3"))
