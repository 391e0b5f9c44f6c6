"""mBART: BART's module names, but pre-LN layers (`x + dropout(attn(LN(x)))`): the norms are the residual
modules and the layers add the residual after them."""

from dataclasses import replace

from .bart import BART
from .base import SublayerSite
from .registry import register_interface

MBART = register_interface(replace(BART, model_types=("mbart",), residual_sites={
    "mh_adapter": SublayerSite(output="self_attn", residual="self_attn_layer_norm"),
    "cross_adapter": SublayerSite(output="encoder_attn", residual="encoder_attn_layer_norm"),
    "output_adapter": SublayerSite(output="fc2", residual="final_layer_norm"),
}))
