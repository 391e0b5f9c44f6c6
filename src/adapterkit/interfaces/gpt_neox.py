"""GPT-NeoX (Pythia): q/k/v fused in `query_key_value`, interleaved per head ([q_0 k_0 v_0 q_1 ...]).

Parallel (`use_parallel_residual`, the default) or not, the FFN reads `post_attention_layernorm(residual)`: with
x in the parallel form and `x + attn` otherwise, so one site spec serves both.
"""

from .base import FusedSlice, ModelInterface, SublayerSite
from .registry import register_interface

_QKV = "attention.query_key_value"

GPT_NEOX = register_interface(ModelInterface(
    model_types=("gpt_neox",),
    embeddings="embed_in",
    layers="layers",
    attention={m: FusedSlice(_QKV, i, per_head="num_attention_heads") for i, m in enumerate("qkv")}
    | {"o": "attention.dense"},
    intermediate=("mlp.dense_h_to_4h",),
    output=("mlp.dense_4h_to_h",),
    residual_sites={
        "mh_adapter": SublayerSite(output="post_attention_dropout", residual="input_layernorm"),
        "output_adapter": SublayerSite(output="post_mlp_dropout", residual="post_attention_layernorm"),
    },
    self_attention="attention",
    lm_heads=("embed_out",),
))
