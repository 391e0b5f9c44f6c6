"""AdapterHub weight names <-> the state dict of `model.adapterkit[name]` (and of a fusion).

The layer and the location come from the layout (layout.py); the rest of a key is the method's: each method's
"adapterhub" map declares its `LAYER_KIND` (the key segment: "adapters", "loras", ...) and converts its own
parameter names (`import_layer` / `export_layer`, `shared_import` / `shared_export` for model-level modules).
Unknown keys raise, naming the key: a checkpoint is never loaded half-understood.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from ...configs import AdapterConfig
from ...errors import AdapterConfigError
from ...interfaces.base import ModelInterface
from ...registry import member_specs
from .config import check_convert
from .layout import export_layout, layer_maps


def _hub_members(config: AdapterConfig) -> list[tuple[AdapterConfig, object]]:
    """(member config, its method's AdapterHub map) of each member."""
    return [(member, spec.formats["adapterhub"]) for member, spec in member_specs(config)
            if "adapterhub" in spec.formats]


def state_dict_from_adapterhub(weights: Mapping[str, torch.Tensor], name: str, interface: ModelInterface,
                               config: AdapterConfig, state=None) -> dict[str, torch.Tensor]:
    """AdapterHub weights of adapter `name` -> the state dict of `model.adapterkit[name]`.

    Module names come from the interface (`adapterhub_layers`, `adapterhub`); pass the model's `state`
    (`model.adapter_state`) for models with several layer stacks or sublayers addressed from the end. A fused
    projection's LoRA weights (GPT-2's `c_attn`) are split into its q / k / v parts.
    """
    offsets, per_layer, global_map = layer_maps(interface, state)
    if state is None and len(interface.layers) > 1:
        raise AdapterConfigError("this architecture has several layer stacks; pass state=model.adapter_state")
    check_convert(config, interface, f"AdapterHub adapter {name!r}")
    members = _hub_members(config)
    present_here = None if per_layer is None else {loc for table in per_layer for locs in table.values()
                                                   for loc in locs}
    contexts = {id(m): (m.prepare_import(member, interface, present_here, name)
                        if hasattr(m, "prepare_import") else None) for member, m in members}
    by_kind = {m.LAYER_KIND: (member, m) for member, m in members}
    stacks = "|".join(re.escape(p) for p in sorted(offsets, key=len, reverse=True))
    kinds = "|".join(re.escape(k) for k in sorted(by_kind, key=len, reverse=True)) or "(?!)"
    pattern = re.compile(rf"^(?:.*?\.)?({stacks})\.(\d+)\.(.+?)\.({kinds})\.{re.escape(name)}\.(.+)$")
    model_level = [hit for _, m in members for hit in m.shared_import(name, interface)]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        hit = next(((p.match(key), ours) for p, ours in model_level if p.match(key)), None)
        if hit:
            out[hit[1] + hit[0].group(1)] = tensor
            continue
        m = pattern.match(key)
        if m is None:
            raise AdapterConfigError(f"AdapterHub weight {key!r} of adapter {name!r} has no adapterkit counterpart")
        layer_id = offsets[m.group(1)] + int(m.group(2))
        table = global_map if per_layer is None else (per_layer[layer_id] if layer_id < len(per_layer) else {})
        locations = table.get(m.group(3))
        member, hub = by_kind[m.group(4)]
        if not locations and getattr(hub, "NEEDS_LOCATION", True):
            raise AdapterConfigError(f"AdapterHub weight {key!r} of adapter {name!r} has no adapterkit counterpart")
        out.update(hub.import_layer(key, layer_id, m.group(3), locations, m.group(5), tensor, member, interface,
                                    contexts[id(hub)]))
    return out


def state_dict_to_adapterhub(tensors: Mapping[str, torch.Tensor], name: str, interface: ModelInterface,
                             config: AdapterConfig, state=None) -> dict[str, torch.Tensor]:
    """The state dict of `model.adapterkit[name]` -> AdapterHub keys, relative to the base model.

    AdapterHub's names where the interface gives them (ViT: the transformers 4.x layout), else ours. Pass the
    model's `state` for models with several layer stacks (encoder-decoder) or sublayers addressed from the end.
    """
    check_convert(config, interface, f"adapter {name!r}")
    layout = export_layout(interface, state)
    members = _hub_members(config)
    shared = {module: template for _, m in members for module, template in m.shared_export(interface).items()}
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, list] = {}  # key -> [(order, location, tensor)]: the parts of a fused projection
    for key, tensor in tensors.items():
        scope, rest = key.split(".", 1)
        if scope == "shared":
            module, _, param = rest.partition(".")
            if module not in shared:
                raise AdapterConfigError(f"adapter {name!r}: {key!r} has no AdapterHub counterpart")
            out[shared[module].format(name=name) + param] = tensor
            continue
        layer_id, location, param = rest.split(".", 2)
        prefix, paths = layout(int(layer_id))
        owner = next(((member, m) for member, m in members if m.owns(location, interface)), None)
        if owner is None:
            raise AdapterConfigError(f"adapter {name!r}: {key!r} has no AdapterHub counterpart")
        member, hub = owner
        path = paths.get(location)
        if path is None:
            # the method's own checks first (they say why better than "no name")
            hub.export_layer("", "", location, param, tensor, name, member, interface)
            raise AdapterConfigError(f"adapter {name!r}: {location!r} (a fused or unnamed projection, or a "
                                     "sublayer-hook site the interface gives no AdapterHub name) has no AdapterHub "
                                     "name here; save in the adapterkit format")
        hub_key, hub_tensor, order = hub.export_layer(prefix, path, location, param, tensor, name, member, interface)
        if order is None:
            out[hub_key] = hub_tensor
        else:
            parts.setdefault(hub_key, []).append((order, location, hub_tensor))
    for key, found in parts.items():
        out[key] = _fused(key, sorted(found, key=lambda part: part[0]))
    return out


def _fused(key: str, parts: list) -> torch.Tensor:
    """One AdapterHub tensor from a fused projection's parts in q, k, v order (the inverse of the import's split);
    a gated LoRA's gate too: the package keeps one gate there with one head (row) per part."""
    tensors = [tensor for _, _, tensor in parts]
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)


def fusion_state_dict_from_adapterhub(weights: Mapping[str, torch.Tensor], fusion_name: str,
                                      interface: ModelInterface, state=None) -> dict[str, torch.Tensor]:
    """AdapterHub AdapterFusion weights (`...layer.3.output.adapter_fusion_layer.<a,b>.query.weight`) -> the state
    dict of `model.adapterkit_fusion[<a,b>]` (`layers.3.output_adapter.query.weight`). Unknown keys raise. Pass
    the model's `state` for models with several layer stacks or sublayers addressed from the end."""
    offsets, per_layer, global_map = layer_maps(interface, state)
    if state is None and len(interface.layers) > 1:
        raise AdapterConfigError("this architecture has several layer stacks; pass state=model.adapter_state")
    stacks = "|".join(re.escape(p) for p in sorted(offsets, key=len, reverse=True))
    pattern = re.compile(rf"^(?:.*?\.)?({stacks})\.(\d+)\.(.+?)\.adapter_fusion_layer\.{re.escape(fusion_name)}\.(.+)$")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        m = pattern.match(key)
        location = None
        if m:
            layer_id = offsets[m.group(1)] + int(m.group(2))
            table = global_map if per_layer is None else (per_layer[layer_id] if layer_id < len(per_layer) else {})
            location = next((loc for loc in table.get(m.group(3), ()) if loc in interface.residual_sites), None)
        if location is None:
            raise AdapterConfigError(f"AdapterHub weight {key!r} of fusion {fusion_name!r} has no adapterkit "
                                     "counterpart")
        out[f"layers.{layer_id}.{location}.{m.group(4)}"] = tensor
    return out


def fusion_state_dict_to_adapterhub(tensors: Mapping[str, torch.Tensor], fusion_name: str,
                                    interface: ModelInterface, state=None) -> dict[str, torch.Tensor]:
    """The state dict of `model.adapterkit_fusion[<a,b>]` -> AdapterHub keys (relative to the base model), the
    inverse of `fusion_state_dict_from_adapterhub`."""
    layout = export_layout(interface, state)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        _, layer_id, location, param = key.split(".", 3)
        prefix, paths = layout(int(layer_id))
        if paths.get(location) is None:
            raise AdapterConfigError(f"fusion {fusion_name!r}: {location!r} has no AdapterHub name here; save it in "
                                     "the adapterkit format")
        out[f"{prefix}{paths[location]}.adapter_fusion_layer.{fusion_name}.{param}"] = tensor
    return out
