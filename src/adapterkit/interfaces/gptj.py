"""GPT-J: parallel sublayers `x + attn(LN(x)) + mlp(LN(x))` (one norm `ln_1`, the residual of both sites)."""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

GPTJ = register_interface(ModelInterface(
    model_types=("gptj",),
    embeddings="wte",
    layers="h",
    attention={"q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.out_proj"},
    intermediate=("mlp.fc_in",),
    output=("mlp.fc_out",),
    residual_sites={
        "mh_adapter": SublayerSite(output="attn", residual="ln_1"),
        "output_adapter": SublayerSite(output="mlp", residual="ln_1"),
    },
    self_attention="attn",
    lm_heads=("lm_head",),
    adapterhub={"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"},
))
