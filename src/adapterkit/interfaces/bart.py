"""BART: post-LN encoder-decoder whose residual adds are in the layers' forward (`LN(residual + dropout(h))`).

Layers are numbered encoder first, then decoder (as `adapters`). The cross-attention site and projections exist
in decoder layers only. Where the layer applies functional dropout after a sublayer, the adapter runs before
that dropout (identical in eval mode).
"""

from .base import ModelInterface, SublayerSite
from .registry import register_interface


def _attention(prefix: str, optional: str = "") -> dict:
    return {m: f"{prefix}.{name}{optional}" for m, name in zip("qkvo", ("q_proj", "k_proj", "v_proj", "out_proj"))}


BART = register_interface(ModelInterface(
    model_types=("bart",),
    embeddings="encoder.layernorm_embedding|decoder.layernorm_embedding",  # (BartForCausalLM: no encoder)
    layers=("encoder.layers?", "decoder.layers?"),
    attention=_attention("self_attn"),
    cross_attention_projections=_attention("encoder_attn", "?"),  # "?": absent from encoder-only stacks
    intermediate=("fc1",),
    output=("fc2",),
    residual_sites={
        "mh_adapter": SublayerSite(output="self_attn", residual="self_attn", layer_norm="self_attn_layer_norm"),
        "cross_adapter": SublayerSite(output="encoder_attn", residual="encoder_attn",
                                      layer_norm="encoder_attn_layer_norm"),
        "output_adapter": SublayerSite(output="fc2", residual="fc1", layer_norm="final_layer_norm"),
    },
    self_attention="self_attn",
    cross_attention="encoder_attn",
    encoder_layers="encoder.layers",
    lm_heads=("lm_head",),
    adapterhub={"invertible": "encoder.invertible_adapters",
                "mh_adapter": "attention_adapters", "cross_adapter": "cross_attention_adapters",
                "output_adapter": "output_adapters"},
))
