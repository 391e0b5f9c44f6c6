"""X-MOD: RoBERTa's layout with language adapters of its own after each FFN (`output.adapter_modules`, chosen by
`lang_ids` or the default language).

The `adapters` package deletes those language adapters (its language adapters are AdapterHub adapters: the layout
of AdapterHub's xmod-base, `languages=[]`) and puts its sites where they were: the FFN output `dropout(dense(h))`
with the residual and the layer norm X-MOD's language adapter reuses (`adapter_layer_norm` where the config has
one), before the layer's own norm; the attention output adds its residual without a norm. That layout is this
interface, on models without language adapters. A model with its own (facebook's checkpoints) keeps them: there
`adapterkit.init` infers an interface around them instead (an AdapterError from `for_model` falls back).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AdapterError
from .base import ModelInterface, ResidualSite
from .registry import register_interface
from .roberta import ROBERTA, ROBERTA_TASK_HEADS


@dataclass(frozen=True)
class XmodInterface(ModelInterface):
    def for_model(self, model) -> ModelInterface:
        config = model.config
        if config.languages or config.pre_norm or not config.ln_before_adapter:
            raise AdapterError("this X-MOD has language adapters of its own, or another layout than the adapters "
                               "package's X-MOD (pre_norm, ln_before_adapter=False): an interface is inferred")
        return self


_MH = ResidualSite("attention.output", layer_norm=None)  # (XmodSelfOutput adds the residual; the norm comes later)

XMOD = register_interface(XmodInterface(**{
    **{f: getattr(ROBERTA, f) for f in ROBERTA.__dataclass_fields__},
    "model_types": ("xmod",),
    "residual_sites": {"mh_adapter": _MH, "output_adapter": ResidualSite("output")},
    "cross_attention": None, "cross_attention_projections": {}, "adapterhub": {},
    "task_heads": {name.replace("Roberta", "Xmod"): head for name, head in ROBERTA_TASK_HEADS.items()},
    "variants": (("adapter_layer_norm", {"residual_sites": {
        "mh_adapter": _MH, "output_adapter": ResidualSite("output", layer_norm="adapter_layer_norm")}}),),
}))
