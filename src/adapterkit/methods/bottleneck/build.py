"""How a bottleneck config becomes modules: one adapter per (layer, location), Compacter's shared PHM parameters
and the NICE invertible adapter at the model level."""

from __future__ import annotations

from .config import BnConfig
from .invertible import build_invertible
from .modules import BottleneckAdapter
from .phm import PHMShared

LOCATIONS = ("mh_adapter", "output_adapter", "cross_adapter")


def build(state, name: str, config: BnConfig) -> None:
    hidden = state.hidden_size
    phm = None
    if config.phm_layer and (config.shared_phm_rule or config.shared_W_phm):
        shared_width = int(hidden // config.reduction_factor_for(0))
        phm = state.add_model_module(name, "phm", PHMShared(hidden, shared_width, config))
    locations = [loc for loc in LOCATIONS if getattr(config, loc)]
    where = {loc: set(state.site_layers(loc, config.leave_out)) for loc in locations}
    for layer_id in state.layer_ids(config.leave_out):
        for location in locations:
            if layer_id not in where[location]:
                continue
            width = int(hidden // config.reduction_factor_for(layer_id))
            module = BottleneckAdapter(hidden, width, config, phm)
            if module.gate is not None:
                module.gate.bind(state, name, layer_id, location)
            state.add_layer_module(name, layer_id, location, module, site="residual")
    if config.inv_adapter:
        build_invertible(state, name, config)
