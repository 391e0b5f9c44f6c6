"""DistilBERT: post-LN, but the residual add is in the layer's forward (`sa_layer_norm(attn_out + x)`), so the
bottleneck sites hook the attention and FFN modules (their input is the residual)."""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

DISTILBERT = register_interface(ModelInterface(
    model_types=("distilbert",),
    embeddings="embeddings",
    layers="transformer.layer",
    attention={"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin", "o": "attention.out_lin"},
    intermediate=("ffn.lin1",),
    output=("ffn.lin2",),
    residual_sites={
        "mh_adapter": SublayerSite(output="attention", residual="attention", layer_norm="sa_layer_norm"),
        "output_adapter": SublayerSite(output="ffn", residual="ffn", layer_norm="output_layer_norm"),
    },
    self_attention="attention",
    lm_heads=("vocab_transform",),
    adapterhub={"mh_adapter": "attention_adapters", "output_adapter": "output_adapters",
                "prefix": "self"},  # the `adapters` package's DistilBERT names its prefix group "self"
))
