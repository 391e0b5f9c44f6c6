"""BERT: post-LN encoder; bottleneck adapters sit in BertSelfOutput / BertOutput before their LayerNorm."""

from .base import ModelInterface, ResidualSite
from .registry import register_interface

BERT = register_interface(ModelInterface(
    model_types=("bert",),
    embeddings="embeddings",
    layers="encoder.layer",
    attention={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "o": "attention.output.dense"},
    intermediate=("intermediate.dense",),
    output=("output.dense",),
    residual_sites={"mh_adapter": ResidualSite("attention.output"), "output_adapter": ResidualSite("output")},
    self_attention="attention.self",
    lm_heads=("cls",),
))
