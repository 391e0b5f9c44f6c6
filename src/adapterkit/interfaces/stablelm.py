"""StableLM: pre-LN decoder with Llama's projection names and a dropout module on the FFN output.

`use_parallel_residual` checkpoints (`x + attn(LN(x)) + mlp(LN(x))`) have no post_attention_layernorm: the FFN's
residual is then the input of input_layernorm, which the path alternative picks in those layers.
"""

from dataclasses import replace

from .base import SublayerSite
from .llama import LLAMA
from .registry import register_interface

STABLELM = register_interface(replace(LLAMA, model_types=("stablelm",), residual_sites={
    "mh_adapter": SublayerSite(output="self_attn", residual="input_layernorm"),
    "output_adapter": SublayerSite(output="dropout", residual="post_attention_layernorm|input_layernorm"),
}, adapterhub={}, adapterhub_differs={}))
