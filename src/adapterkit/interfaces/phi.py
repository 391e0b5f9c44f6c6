"""Phi (1, 1.5, 2): parallel sublayers `x + attn(LN(x)) + mlp(LN(x))` with one norm; attention output `dense`."""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

PHI = register_interface(ModelInterface(
    model_types=("phi",),
    embeddings="embed_tokens",
    layers="layers",
    attention={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.dense"},
    intermediate=("mlp.fc1",),
    output=("mlp.fc2",),
    residual_sites={
        "mh_adapter": SublayerSite(output="self_attn", residual="input_layernorm"),
        "output_adapter": SublayerSite(output="mlp", residual="input_layernorm"),
    },
    self_attention="self_attn",
    lm_heads=("lm_head",),
    adapterhub={"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"},
))
