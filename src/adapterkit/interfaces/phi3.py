"""Phi-3 / Phi-4: Llama-like, with q/k/v fused in `qkv_proj` ([q | k | v], grouped-query widths from the config)
and gate and up fused in `gate_up_proj`; the sublayer outputs pass a dropout module before the residual add."""

from .base import FusedSlice, ModelInterface, SublayerSite
from .registry import register_interface

PHI3 = register_interface(ModelInterface(
    model_types=("phi3",),
    embeddings="embed_tokens",
    layers="layers",
    attention={m: FusedSlice("self_attn.qkv_proj", i, grouped="num_key_value_heads") for i, m in enumerate("qkv")}
    | {"o": "self_attn.o_proj"},
    intermediate=("mlp.gate_up_proj",),
    output=("mlp.down_proj",),
    residual_sites={
        "mh_adapter": SublayerSite(output="resid_attn_dropout", residual="input_layernorm"),
        "output_adapter": SublayerSite(output="resid_mlp_dropout", residual="post_attention_layernorm"),
    },
    self_attention="self_attn",
    lm_heads=("lm_head",),
))
