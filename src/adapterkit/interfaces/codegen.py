"""CodeGen: GPT-J's parallel layer `x + attn(LN(x)) + mlp(LN(x))`, with q/k/v fused in `attn.qkv_proj` as the
model's 4 tensor-parallel groups (`mp_num`, fixed at 4 in its code), each [q | v | k] (value before key)."""

from dataclasses import replace

from .base import FusedSlice
from .gptj import GPTJ
from .registry import register_interface

MP_NUM = 4  # CodeGenAttention.mp_num

CODEGEN = register_interface(replace(
    GPTJ, model_types=("codegen",),
    attention={m: FusedSlice("attn.qkv_proj", i, per_head=MP_NUM) for i, m in enumerate("qvk")}
    | {"o": "attn.out_proj"},
    adapterhub={},  # (the adapters package has no CodeGen: adapterkit's own names)
))
