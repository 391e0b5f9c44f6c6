"""DeBERTa: BERT-style post-LN output modules; q/k/v come from one fused `in_proj` whose output DeBERTa splits
per head ([q_0 k_0 v_0 q_1 ...], see `DisentangledSelfAttention.transpose_for_scores`). Its attention computes
its scores itself (no attention registry): prefix tuning reaches it through `own_attention`.

`adapters` 1.x slices `in_proj` as three contiguous blocks instead, so its LoRA / (IA)^3 "q" touches a mix of
heads' q, k and v. `DEBERTA_ADAPTERHUB_QKV` reproduces that layout for checkpoints trained there
(`adapterkit.init(model, interface=DEBERTA_ADAPTERHUB_QKV)`); the registered interface targets the real q / k / v.
"""

from dataclasses import replace

from .base import FusedSlice, ModelInterface, OwnAttention, ResidualSite
from .registry import register_interface

_IN_PROJ = "attention.self.in_proj"

DEBERTA = register_interface(ModelInterface(
    model_types=("deberta",),
    embeddings="embeddings",
    layers="encoder.layer",
    attention={"q": FusedSlice(_IN_PROJ, 0, per_head="num_attention_heads"),
               "k": FusedSlice(_IN_PROJ, 1, per_head="num_attention_heads"),
               "v": FusedSlice(_IN_PROJ, 2, per_head="num_attention_heads"),
               "o": "attention.output.dense"},
    intermediate=("intermediate.dense",),
    output=("output.dense",),
    residual_sites={"mh_adapter": ResidualSite("attention.output"), "output_adapter": ResidualSite("output")},
    self_attention="attention.self",
    lm_heads=("cls", "lm_predictions"),
    attention_registry=False,  # DeBERTa's disentangled attention is its own code: prefix tuning goes through hooks
    own_attention=OwnAttention("fused_per_head", key="in_proj", value_bias="v_bias", bias_method="disentangled_att_bias"),
))

DEBERTA_ADAPTERHUB_QKV = replace(DEBERTA, attention={
    "q": FusedSlice(_IN_PROJ, 0), "k": FusedSlice(_IN_PROJ, 1), "v": FusedSlice(_IN_PROJ, 2),
    "o": "attention.output.dense"})
