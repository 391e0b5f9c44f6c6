"""Gemma 2: pre-LN decoder that also norms each sublayer output before the residual add
(`x + post_attention_layernorm(attn(input_layernorm(x)))`, `x + post_feedforward_layernorm(mlp(
pre_feedforward_layernorm(x)))`): the adapter sits after that norm, where the layer adds h to x."""

from .base import ModelInterface, SublayerSite
from .llama import PLUGIN_FFN
from .registry import register_interface

GEMMA2 = register_interface(ModelInterface(
    model_types=("gemma2",),
    embeddings="embed_tokens",
    layers="layers",
    attention={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"},
    intermediate=("mlp.up_proj", "mlp.gate_proj"),
    output=("mlp.down_proj",),
    residual_sites={
        "mh_adapter": SublayerSite(output="post_attention_layernorm", residual="input_layernorm"),
        "output_adapter": SublayerSite(output="post_feedforward_layernorm", residual="pre_feedforward_layernorm"),
    },
    self_attention="self_attn",
    lm_heads=("lm_head",),
    adapterhub={"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"},
    adapterhub_differs=PLUGIN_FFN,
))
