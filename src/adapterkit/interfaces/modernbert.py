"""ModernBERT: pre-LN encoder; q/k/v fused in `attn.Wqkv` as contiguous [q | k | v] blocks (its forward views
the output as (3, heads, head_dim)); gated FFN with the fused input projection `mlp.Wi` ([input | gate])."""

from .base import FusedSlice, ModelInterface, SublayerSite
from .registry import register_interface

MODERNBERT = register_interface(ModelInterface(
    model_types=("modernbert",),
    embeddings="embeddings",
    layers="layers",
    attention={"q": FusedSlice("attn.Wqkv", 0), "k": FusedSlice("attn.Wqkv", 1), "v": FusedSlice("attn.Wqkv", 2),
               "o": "attn.Wo"},
    intermediate=("mlp.Wi",),
    output=("mlp.Wo",),
    residual_sites={
        "mh_adapter": SublayerSite(output="attn", residual="attn_norm"),  # (layer 0's attn_norm is an Identity)
        "output_adapter": SublayerSite(output="mlp", residual="mlp_norm"),
    },
    self_attention="attn",
))
