"""GPT-2: pre-LN decoder; q/k/v fused in the Conv1D `c_attn` (output [q | k | v]), Conv1D projections elsewhere."""

from .base import FusedSlice, ModelInterface, SublayerSite
from .registry import register_interface

GPT2 = register_interface(ModelInterface(
    model_types=("gpt2",),
    embeddings="drop",
    layers="h",
    attention={"q": FusedSlice("attn.c_attn", 0), "k": FusedSlice("attn.c_attn", 1),
               "v": FusedSlice("attn.c_attn", 2), "o": "attn.c_proj"},
    intermediate=("mlp.c_fc",),
    output=("mlp.c_proj",),
    residual_sites={
        "mh_adapter": SublayerSite(output="attn", residual="ln_1"),
        "output_adapter": SublayerSite(output="mlp", residual="ln_2"),
    },
    self_attention="attn",
    lm_heads=("lm_head",),
    adapterhub={"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"},
))
