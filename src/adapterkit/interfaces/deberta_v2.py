"""DeBERTa-v2/v3: BERT-style post-LN output modules, separate q/k/v projections named `*_proj`."""

from dataclasses import replace

from .base import OwnAttention
from .deberta import DEBERTA
from .registry import register_interface

DEBERTA_V2 = register_interface(replace(
    DEBERTA,
    model_types=("deberta-v2",),
    attention={"q": "attention.self.query_proj", "k": "attention.self.key_proj", "v": "attention.self.value_proj",
               "o": "attention.output.dense"},
    own_attention=OwnAttention("separate", key="key_proj", value="value_proj",
                               bias_method="disentangled_attention_bias"),
))
