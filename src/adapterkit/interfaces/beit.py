"""BEiT (transformers 5 layout): pre-LN layers with layer scale, `x + drop_path(lambda_1 * attention(LN(x)))`,
`x + drop_path(lambda_2 * mlp(LN(x)))`; the adapters sit on the scaled sublayer output (one `drop_path` module,
called once per site), where the `adapters` package puts them.

AdapterHub checkpoints use the 4.x names (`encoder.layer.<i>.attention.attention.query`, `intermediate.dense`),
declared below for loading them.
"""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

BEIT = register_interface(ModelInterface(
    model_types=("beit",),
    embeddings="embeddings",
    layers="layers",
    attention={"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "o": "attention.o_proj"},
    intermediate=("mlp.fc1",),
    output=("mlp.fc2",),
    residual_sites={
        "mh_adapter": SublayerSite(output="drop_path", residual="layernorm_before"),
        "output_adapter": SublayerSite(output="drop_path", residual="layernorm_after"),
    },
    self_attention="attention",
    adapterhub_layers="encoder.layer",
    adapterhub={"attn_q": "attention.attention.query", "attn_k": "attention.attention.key",
                "attn_v": "attention.attention.value", "attn_o": "attention.output.dense",
                "intermediate": "intermediate.dense", "output": "output.dense",
                "mh_adapter": "attention_adapters", "output_adapter": "output_adapters",
                "self_attention": "attention.attention"},
))
