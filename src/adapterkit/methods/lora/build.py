"""How a LoRA / (IA)^3 config becomes modules on the projections, and how they merge into the weights."""

from __future__ import annotations

import torch

from ...configs.patterns import settle
from ...errors import AdapterError
from ...nn.experts import ExpertsTarget
from ...nn.module_target import targeted_modules
from .config import LoRAConfig, location_group
from .dora import DoRA
from .dvora import DvoRA
from .experts import expert_module
from .init import changes_base, initialise
from .modules import IA3, IA3Input, LoRA
from .targets import build_targeted
from .vera import SHARED_KEY, Vera, VeraShared, largest

def locations_of(state, config: LoRAConfig):
    """The interface locations `config` targets."""
    return state.interface.linear_locations(
        attn_matrices=config.attn_matrices if config.selfattn_lora else (),
        intermediate=config.intermediate_lora, output=config.output_lora)


def build(state, name: str, config: LoRAConfig) -> None:
    if config.composition_mode == "scale" and config.dropout > 0:
        raise AdapterError(f"adapter {name!r}: (IA)^3 (composition_mode='scale') does not support dropout")
    if config.target_modules is not None:  # peft's selection by module name (targets.py)
        build_targeted(state, name, config)
        return
    cls = IA3 if config.composition_mode == "scale" else LoRA
    locations = locations_of(state, config)
    if config.is_vera:
        _build_vera(state, name, config, locations)
        return
    names = {id(m): n for n, m in state.model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    adapted, projections = [], state.projections(locations, config.leave_out, experts=True)
    if changes_base(config.init_weights):  # in the model's module order, as peft: one seed, peft's random SVD
        projections.sort(key=lambda p: (p[0], order.get(names.get(id(p[2].module)), 0)))
    for layer_id, location, projection in projections:
        if isinstance(projection, ExpertsTarget):  # a MoE module's fused 3D weight: one update per expert
            module_name = f"{names.get(id(projection.module), '')}.{projection.name}"
            adapted.append(module_name)
            module = expert_module(name, config, location, projection, module_name)
            state.add_layer_module(name, layer_id, location, module, site="experts", target=projection)
            continue
        if location_group(location) in config.scale_inputs:
            if projection.rows is not None:
                raise AdapterError(
                    f"adapter {name!r}: scale_inputs={config.scale_inputs} includes {location!r}, a part of a "
                    "fused projection that shares its input with the other parts; scale its output instead")
            module = IA3Input(projection.in_features, projection.out_features, config)
            module.__dict__["projection"] = projection
            state.add_layer_module(name, layer_id, location, module, site="linear", target=projection)
            continue
        if cls is LoRA:
            module_name = names.get(id(projection.module), "")
            adapted.append(module_name)
            r_alpha = config.rank_for(module_name)
            if config.use_dora:
                module = DoRA(projection.in_features, projection.out_features, config, projection, *r_alpha)
            else:
                module = LoRA(projection.in_features, projection.out_features, config, *r_alpha)
            if changes_base(config.init_weights):
                initialise(module, projection, config.init_weights)  # writes W - s B A (registry.build records it)
                if config.use_dora:  # as peft: the magnitude starts from the residual weight
                    module.initialise_magnitude()
        else:
            module = cls(projection.in_features, projection.out_features, config)
        if module.gate is not None:
            module.gate.bind(state, name, layer_id, location)
        state.add_layer_module(name, layer_id, location, module, site="linear", target=projection)
    settle(state, name, config, adapted)  # unmatched keys warned, order-dependent patterns made exact


def _build_vera(state, name: str, config: LoRAConfig, locations) -> None:
    """One frozen pair for the adapter (`shared.vera`, sized to its largest projection), a VeRA / DvoRA module on
    each projection."""
    found = list(state.projections(locations, config.leave_out))
    if not found:
        return
    in_max, out_max = largest(p for _, _, p in found)
    shared = state.add_model_module(name, SHARED_KEY, VeraShared(config.r, in_max, out_max))
    for layer_id, location, projection in found:
        if config.use_dora:
            module = DvoRA(projection.in_features, projection.out_features, config, shared, projection)
        else:
            module = Vera(projection.in_features, projection.out_features, config, shared)
        if module.gate is not None:
            module.gate.bind(state, name, layer_id, location)
        state.add_layer_module(name, layer_id, location, module, site="linear", target=projection)


@torch.no_grad()
def merge(state, name: str, config: LoRAConfig) -> None:
    """Fold every module into its projection (through `Projection.set`: the generic merge keeps the base rows
    and reset restores them exactly, registry.merge)."""
    if config.use_gating:
        raise AdapterError(
            f"cannot merge {name!r}: its LoRA is gated (use_gating=True), and the gate depends on the input; "
            "only ungated LoRA / (IA)^3 adapters can be merged"
        )
    for key, module in [*state.layer_modules(name), *targeted_modules(state, name)]:
        module.merge_into(state.sites[key].target)
