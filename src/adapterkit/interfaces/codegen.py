"""CodeGen: GPT-J's parallel layer `x + attn(LN(x)) + mlp(LN(x))`, with q/k/v fused in `attn.qkv_proj` as the
model's 4 tensor-parallel groups (`mp_num`, fixed at 4 in its code), each [q | v | k] (value before key)."""

from .base import FusedSlice, ModelInterface, SublayerSite
from .registry import register_interface

MP_NUM = 4  # CodeGenAttention.mp_num

CODEGEN = register_interface(ModelInterface(
    model_types=("codegen",),
    embeddings="wte",
    layers="h",
    attention={m: FusedSlice("attn.qkv_proj", i, per_head=MP_NUM) for i, m in enumerate("qvk")}
    | {"o": "attn.out_proj"},
    intermediate=("mlp.fc_in",),
    output=("mlp.fc_out",),
    residual_sites={
        "mh_adapter": SublayerSite(output="attn", residual="ln_1"),
        "output_adapter": SublayerSite(output="mlp", residual="ln_1"),
    },
    self_attention="attn",
    lm_heads=("lm_head",),
))
