"""ALBERT: BERT's post-LN layer with its own module names, one layer group (`albert_layers`) run
`num_hidden_layers` times with shared weights, so adapters are shared across the repeats as well (as in the
`adapters` package). What the automatic interface infers, plus the AdapterHub names of the bottleneck sites."""

from .base import ModelInterface, SublayerSite
from .registry import register_interface

ALBERT = register_interface(ModelInterface(
    model_types=("albert",),
    embeddings="embeddings",
    layers="encoder.albert_layer_groups.0.albert_layers",
    attention={"q": "attention.query", "k": "attention.key", "v": "attention.value", "o": "attention.dense"},
    intermediate=("ffn",),
    output=("ffn_output",),
    residual_sites={
        "mh_adapter": SublayerSite(output="attention.output_dropout", residual="attention",
                                   layer_norm="attention.LayerNorm"),
        "output_adapter": SublayerSite(output="ffn_output", residual="ffn", layer_norm="full_layer_layer_norm"),
    },
    self_attention="attention",
    adapterhub={"mh_adapter": "attention.attention_adapters", "output_adapter": "output_adapters"},
))
