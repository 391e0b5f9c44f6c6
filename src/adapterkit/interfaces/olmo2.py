"""OLMo 2: no pre-norms; each sublayer output is normed before the residual add (`x + post_attention_layernorm(
attn(x))`), so the residual is the sublayer's own input and the output site is the post-norm."""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

OLMO2 = register_interface(ModelInterface(
    model_types=("olmo2",),
    embeddings="embed_tokens",
    layers="layers",
    attention={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"},
    intermediate=("mlp.up_proj", "mlp.gate_proj"),
    output=("mlp.down_proj",),
    residual_sites={
        "mh_adapter": SublayerSite(output="post_attention_layernorm", residual="self_attn"),
        "output_adapter": SublayerSite(output="post_feedforward_layernorm", residual="mlp"),
    },
    self_attention="self_attn",
    lm_heads=("lm_head",),
))
