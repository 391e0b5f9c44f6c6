"""VitDet (the ViTDet backbone): pre-LN layers on channel-last (batch, height, width, channels) states, q/k/v fused
contiguously in `attention.qkv`. Windowed layers partition the states around the attention, so its output is not
the residual's shape where the layer adds it: no attention bottleneck site; the FFN's is ordinary.
Its attention computes its scores itself (decomposed relative positions inside): prefix tuning is refused."""

from .base import FusedSlice, ModelInterface, SublayerSite
from .registry import register_interface

VITDET = register_interface(ModelInterface(
    model_types=("vitdet",),
    embeddings="embeddings",
    layers="encoder.layer",
    attention={m: FusedSlice("attention.qkv", i) for i, m in enumerate("qkv")} | {"o": "attention.proj"},
    intermediate=("mlp.fc1",),
    output=("mlp.fc2",),
    residual_sites={"output_adapter": SublayerSite(output="mlp", residual="norm2")},
    self_attention="attention",
    attention_registry=False,  # (its attention computes scores itself, with relative positions: no prefix tuning)
    unresolved={"mh_adapter": "window partitioning sits between VitDet's attention and its residual add"},
))
