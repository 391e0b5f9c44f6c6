"""How an MTL-LoRA config becomes modules on the projections, and how one task merges into the weights."""

from __future__ import annotations

import torch

from ...errors import AdapterError
from .config import MTLLoRAConfig
from .modules import MTLLoRA


def build(state, name: str, config: MTLLoRAConfig) -> None:
    locations = state.interface.linear_locations(
        attn_matrices=config.attn_matrices if config.selfattn_lora else (),
        intermediate=config.intermediate_lora, output=config.output_lora)
    for layer_id, location, projection in state.projections(locations, config.leave_out):
        module = MTLLoRA(projection.in_features, projection.out_features, config)
        if module.gate is not None:
            module.gate.bind(state, name, layer_id, location)
        state.add_layer_module(name, layer_id, location, module, site="linear", target=projection)


@torch.no_grad()
def merge(state, name: str, config: MTLLoRAConfig) -> None:
    """Fold one task's update `s B_t Lambda_t A` into the weights (the `adapters` package writes a 3-D weight
    here, and the next forward fails). A MultiTask batch needs each row's own task: merge one task only for
    batches of that task."""
    if config.use_gating:
        raise AdapterError(f"cannot merge {name!r}: its MTL-LoRA is gated (use_gating=True), and the gate depends "
                           "on the input; only ungated MTL-LoRA adapters can be merged")
    for (layer_id, location), module in state.layer_modules(name):
        module.merge_into(state.sites[(layer_id, location)].target)
