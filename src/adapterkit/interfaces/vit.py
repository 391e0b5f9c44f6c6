"""ViT (transformers 5 layout): pre-LN layers `x + dropout(attention(LN(x)))`, `x + dropout(mlp(LN(x)))`.

AdapterHub checkpoints use the 4.x names (`encoder.layer.<i>.attention.attention.query`, adapters in
`attention_adapters` / `output.output_adapters`), declared below for loading them.
"""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

VIT = register_interface(ModelInterface(
    model_types=("vit",),
    embeddings="embeddings",
    layers="layers",
    attention={"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj"},
    intermediate=("mlp.fc1",),
    output=("mlp.fc2",),
    residual_sites={
        "mh_adapter": SublayerSite(output="attention", residual="layernorm_before"),
        "output_adapter": SublayerSite(output="mlp", residual="layernorm_after"),
    },
    self_attention="attention",
    adapterhub_layers="encoder.layer",
    adapterhub={"attn_q": "attention.attention.query", "attn_k": "attention.attention.key",
                "attn_v": "attention.attention.value", "attn_o": "attention.output.dense",
                "intermediate": "intermediate.dense", "output": "output.dense",
                "mh_adapter": "attention_adapters", "output_adapter": "output.output_adapters",
                "self_attention": "attention.attention"},
))
