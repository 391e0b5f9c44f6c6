"""Qwen2: Llama's layer layout (with biases on q/k/v, which LoRA and (IA)^3 handle as any bias).

Like Qwen3, the `adapters` package reaches Qwen2 through its plugin interface only, which puts "intermediate"
LoRA / (IA)^3 on up_proj alone and "output" on down_proj (not its built-in Llama's down_proj / up_proj swap)."""

from dataclasses import replace

from .llama import LLAMA, PLUGIN_FFN
from .registry import register_interface

QWEN2 = register_interface(replace(LLAMA, model_types=("qwen2",), adapterhub_differs=PLUGIN_FFN))
