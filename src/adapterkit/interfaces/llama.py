"""Llama: pre-LN (RMSNorm) decoder with a gated FFN `down(act(gate(x)) * up(x))`.

"intermediate" means the up and gate projections and "output" the down projection (`adapters` 1.x swaps
them, putting its "intermediate" LoRA on `down_proj`).
"""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

# where the `adapters` package reaches a gated-FFN decoder through its plugin interface (Qwen3, Gemma 2/3): its
# "intermediate" LoRA / (IA)^3 sits on up_proj alone, its "output" on down_proj
PLUGIN_FFN = {"intermediate_1": "the `adapters` plugin interface puts its intermediate LoRA / (IA)^3 on up_proj "
                                "alone (adapterkit: up_proj and gate_proj)"}

LLAMA = register_interface(ModelInterface(
    model_types=("llama",),
    embeddings="embed_tokens",
    layers="layers",
    attention={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj"},
    intermediate=("mlp.up_proj", "mlp.gate_proj"),
    output=("mlp.down_proj",),
    residual_sites={
        "mh_adapter": SublayerSite(output="self_attn", residual="input_layernorm"),
        "output_adapter": SublayerSite(output="mlp", residual="post_attention_layernorm"),
    },
    self_attention="self_attn",
    lm_heads=("lm_head",),
    adapterhub={"mh_adapter": "attention_adapters", "output_adapter": "output_adapters"},
    adapterhub_differs={"intermediate": "the `adapters` package puts its intermediate LoRA / (IA)^3 on down_proj "
                                        "(adapterkit: up_proj and gate_proj)",
                        "output": "the `adapters` package puts its output LoRA / (IA)^3 on up_proj alone "
                                  "(adapterkit: down_proj)"},
))
