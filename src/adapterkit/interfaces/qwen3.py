"""Qwen3: Llama's layer layout (plus q/k norms inside the attention, which change no site).

The `adapters` package reaches Qwen3 through its plugin interface only, which puts "intermediate" LoRA / (IA)^3
on up_proj alone and "output" on down_proj (not its built-in Llama's down_proj / up_proj swap)."""

from dataclasses import replace

from .llama import LLAMA, PLUGIN_FFN
from .registry import register_interface

QWEN3 = register_interface(replace(LLAMA, model_types=("qwen3",), adapterhub_differs=PLUGIN_FFN))
