"""Moshi (its text / temporal decoder, `MoshiModel`): Llama's pre-LN layout, each projection a `MoshiLinear`
holding an `nn.Linear` (`.linear`), and a gated FFN whose `fc1` holds gate and up fused (`fc2`: down).
(The depth decoder's per-codebook "flexible" linears hold stacked weights instead, not described here.)"""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

MOSHI = register_interface(ModelInterface(
    model_types=("moshi",),
    embeddings="embed_tokens",
    layers="layers",
    attention={m: f"self_attn.{m}_proj.linear" for m in "qkvo"},
    intermediate=("mlp.fc1",),
    output=("mlp.fc2",),
    residual_sites={
        "mh_adapter": SublayerSite(output="self_attn", residual="input_layernorm"),
        "output_adapter": SublayerSite(output="mlp", residual="post_attention_layernorm"),
    },
    self_attention="self_attn",
    lm_heads=("lm_head",),
))
