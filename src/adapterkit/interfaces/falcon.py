"""Falcon: q/k/v fused in `query_key_value`, whose layout the config picks (variants below):
- multi-query (`multi_query`, Falcon-7B): [q | k | v] with one key/value head;
- neither: interleaved per head, [q_0 k_0 v_0 q_1 ...];
- `new_decoder_architecture` (Falcon-40B/180B, Falcon 2): interleaved per key/value group, [q.. k v] per group.
Parallel sublayers (`parallel_attn`) read one norm (`input_layernorm`) or two (`ln_attn`, `ln_mlp`); sequential
ones read `post_attention_layernorm` before the FFN: path alternatives pick the residual each layer has.
"""

from .base import FusedSlice, ModelInterface, SublayerSite
from .registry import register_interface

_QKV = "self_attention.query_key_value"
_O = {"o": "self_attention.dense"}


def _slices(**layout):
    return {m: FusedSlice(_QKV, i, **layout) for i, m in enumerate("qkv")} | _O


FALCON = register_interface(ModelInterface(
    model_types=("falcon",),
    embeddings="word_embeddings",
    layers="h",
    attention=_slices(per_head="num_attention_heads"),
    intermediate=("mlp.dense_h_to_4h",),
    output=("mlp.dense_4h_to_h",),
    residual_sites={
        "mh_adapter": SublayerSite(output="self_attention", residual="ln_attn|input_layernorm"),
        "output_adapter": SublayerSite(output="mlp", residual="post_attention_layernorm|ln_mlp|input_layernorm"),
    },
    self_attention="self_attention",
    lm_heads=("lm_head",),
    variants=(
        ("multi_query", {"attention": _slices(grouped=1)}),
        ("new_decoder_architecture", {"attention": _slices(grouped="num_kv_heads", per_head="num_kv_heads")}),
    ),
))
