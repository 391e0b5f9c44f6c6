"""Where AdapterHub keeps each adapter location within a model: its layer stacks and module paths, from the
architecture interface (`adapterhub_layers`, `adapterhub`) and the methods' extra paths (prefix gates)."""

from __future__ import annotations

import torch.nn as nn

from ...interfaces.base import FusedSlice, ModelInterface, ResidualSite, present, resolve, site_in
from ...utils import find_submodule
from ..common import single_stack
from .config import hub_maps


def hub_path(interface: ModelInterface, location: str, spec, layer: nn.Module | None) -> str | None:
    """Where AdapterHub keeps `location`'s weights within a layer (negative indices made concrete if a layer
    is given), or None for a location AdapterHub has no name for."""
    path = interface.adapterhub.get(location)
    spec = site_in(layer, spec)  # (per-stack site specs: the layer's)
    if path is None:
        if isinstance(spec, ResidualSite):
            path = spec.module
        elif isinstance(spec, FusedSlice):
            path = spec.module
        elif isinstance(spec, str):
            alternatives = spec.rstrip("?").split("|")
            path = next((a for a in alternatives if layer is None or find_submodule(layer, a) is not None),
                        alternatives[0])
        else:
            return None
    return path if layer is None else _concrete(layer, path)


def _concrete(layer: nn.Module, path: str) -> str:
    parts, module = [], layer
    for part in path.split("."):
        if module is not None and part.lstrip("-").isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
            part = str(int(part) % len(module))
        module = find_submodule(module, part) if module is not None else None
        parts.append(part)
    return ".".join(parts)


def layer_maps(interface: ModelInterface, state) -> tuple[dict[str, int], list[dict[str, list[str]]] | None,
                                                             dict[str, list[str]]]:
    """(hub stack path -> first layer id, per-layer {hub path: [locations]} if `state` is given, global map)."""
    specs = list(interface.residual_sites.items()) + interface.all_linear_locations()

    def mapping(layer):
        out: dict[str, list[str]] = {}
        for location, spec in specs:
            if layer is not None and not present(layer, spec):
                continue
            path = hub_path(interface, location, spec, layer)
            if path is not None:
                out.setdefault(path, []).append(location)
        return out

    hub_layers = interface.hub_layers()
    if state is None:
        return {hub_layers[0].rstrip("?"): 0}, None, mapping(None)
    offsets = {}
    for ours, hub in zip(interface.layers, hub_layers):
        for path, first, _ in state.stacks:
            if path == ours.rstrip("?"):
                offsets[hub.rstrip("?")] = first
    return offsets, [mapping(layer) for layer in state.layers], {}


def layer_hub_paths(interface: ModelInterface, layer: nn.Module | None) -> dict[str, str]:
    """Location -> AdapterHub path of the module holding it within `layer` (negative indices made concrete;
    None: any layer), for the locations that have one there. The parts of a fused projection (GPT-2's c_attn)
    share its path."""
    out = {}
    for location, spec in list(interface.residual_sites.items()) + interface.all_linear_locations():
        if layer is not None and not present(layer, spec):
            continue
        path = hub_path(interface, location, spec, layer)
        if path is not None:
            out[location] = path
    for m in hub_maps():
        for location, (ours, path) in getattr(m, "hub_paths", lambda _: {})(interface).items():
            if layer is None or resolve(layer, ours) is not None:
                out[location] = path
    return out


def single_stack_layout(interface: ModelInterface):
    single_stack(interface, "AdapterHub export without the model's state")  # a lone id names no stack
    stack, paths = interface.hub_layers()[0].rstrip("?"), layer_hub_paths(interface, None)
    return lambda layer_id: (f"{stack}.{layer_id}.", paths)


def export_layout(interface: ModelInterface, state):
    """layer id -> (its AdapterHub key prefix "<stack>.<index>.", {location: AdapterHub path in that layer})."""
    if state is None:
        return single_stack_layout(interface)
    offsets, _, _ = layer_maps(interface, state)
    starts = sorted((first, hub) for hub, first in offsets.items())
    paths = [layer_hub_paths(interface, layer) for layer in state.layers]

    def layout(layer_id: int):
        first, hub = max(entry for entry in starts if entry[0] <= layer_id)
        return f"{hub}.{layer_id - first}.", paths[layer_id]
    return layout
