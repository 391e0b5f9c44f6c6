"""Cohere (Command-R): parallel sublayers `x + attn(LN(x)) + mlp(LN(x))` with one norm; Llama's module names."""

from dataclasses import replace

from .base import SublayerSite
from .llama import LLAMA
from .registry import register_interface

COHERE = register_interface(replace(LLAMA, model_types=("cohere",), residual_sites={
    "mh_adapter": SublayerSite(output="self_attn", residual="input_layernorm"),
    "output_adapter": SublayerSite(output="mlp", residual="input_layernorm"),
}, adapterhub_differs={}))
