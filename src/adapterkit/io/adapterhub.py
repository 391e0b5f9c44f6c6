"""Translate AdapterHub configs and weight names (adapter-transformers 3.x, `adapters` 1.x) into adapterkit's.

AdapterHub keys name the model's own modules (`encoder.layer.3.output.adapters.<name>.adapter_down.0.weight`,
`...attention.self.query.loras.<name>.lora_A`, `invertible_adapters.<name>.F.0.weight`); adapterkit groups them
per adapter (`layers.3.output_adapter.down.weight`). The architecture interface supplies the module paths, so
this file has no per-model knowledge.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..configs import AdapterConfig, BnConfig, LoRAConfig
from ..errors import AdapterConfigError
from ..interfaces.base import FusedSlice, ModelInterface, ResidualSite, present
from ..utils import find_submodule

# AdapterHub fields adapterkit does not implement, with the value that means "off".
_INERT_FIELDS = {
    "init_weights_seed": None, "use_gating": False, "phm_layer": False,
    "stochastic_depth": 0.0, "use_dora": False, "vera_d": None, "vera_b": None, "dtype": None,
}
# Fields that only matter when an inert feature is on (e.g. PHM settings with phm_layer=False).
_IGNORED_FIELDS = {"phm_dim", "factorized_phm_W", "shared_W_phm", "shared_phm_rule", "factorized_phm_rule",
                   "phm_c_init", "phm_init_range", "learn_phm", "hypercomplex_nonlinearity", "phm_rank", "phm_bias"}


def config_from_adapterhub(data: Mapping[str, Any]) -> AdapterConfig:
    """An AdapterHub config dict (`config.to_dict()`, or `adapter_config.json["config"]`) as an adapterkit config."""
    data = dict(data.get("config", data)) if "config" in data and isinstance(data["config"], Mapping) else dict(data)
    architecture = data.pop("architecture", None) or "bottleneck"
    for key, off in _INERT_FIELDS.items():
        if key in data and data.pop(key) != off:
            raise AdapterConfigError(f"AdapterHub config sets {key!r}, which adapterkit does not support yet")
    for key in _IGNORED_FIELDS:
        data.pop(key, None)
    if "invertible_adapter" in data:  # adapter-transformers 2.x/3.x nested form
        inv = data.pop("invertible_adapter") or {}
        data.setdefault("inv_adapter", inv.get("block_type"))
        data.setdefault("inv_adapter_reduction_factor", inv.get("reduction_factor"))
    cls = {"bottleneck": BnConfig, "lora": LoRAConfig}.get(architecture)
    if cls is None:
        raise AdapterConfigError(
            f"AdapterHub architecture {architecture!r} is not supported yet; supported: bottleneck, lora"
        )
    return cls.from_dict(data)


def _hub_path(interface: ModelInterface, location: str, spec, layer: nn.Module | None) -> str | None:
    """Where AdapterHub keeps `location`'s weights within a layer (negative indices made concrete if a layer
    is given), or None for a location AdapterHub has no name for."""
    path = interface.adapterhub.get(location)
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


def _layer_maps(interface: ModelInterface, state) -> tuple[dict[str, int], list[dict[str, list[str]]] | None,
                                                              dict[str, list[str]]]:
    """(hub stack path -> first layer id, per-layer {hub path: [locations]} if `state` is given, global map)."""
    specs = list(interface.residual_sites.items()) + interface.all_linear_locations()

    def mapping(layer):
        out: dict[str, list[str]] = {}
        for location, spec in specs:
            if layer is not None and not present(layer, spec):
                continue
            path = _hub_path(interface, location, spec, layer)
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


_BOTTLENECK_PARAM = {"adapter_up": "up", "adapter_norm_after": "norm_after", "adapter_norm_before": "norm_before"}


def _bottleneck_param(rest: str, config: BnConfig) -> str:
    head, _, tail = rest.partition(".")
    if head == "adapter_down":
        index, _, tail = tail.partition(".")
        # adapter_down is Sequential([LayerNorm if ln_before], Linear, activation)
        linear_index = 1 if config.ln_before else 0
        return ("down." if int(index) == linear_index else "norm_before.") + tail
    if head in _BOTTLENECK_PARAM:
        return f"{_BOTTLENECK_PARAM[head]}.{tail}"
    if head == "scaling":
        return "scaling"
    raise KeyError(rest)


def state_dict_from_adapterhub(weights: Mapping[str, torch.Tensor], name: str, interface: ModelInterface,
                               config: AdapterConfig, state=None) -> dict[str, torch.Tensor]:
    """AdapterHub weights of adapter `name` -> the state dict of `model.adapterkit[name]`.

    Module names come from the interface (`adapterhub_layers`, `adapterhub`); pass the model's `state`
    (`model.adapter_state`) for models with several layer stacks or sublayers addressed from the end. A fused
    projection's LoRA weights (GPT-2's `c_attn`) are split into its q / k / v parts. Unknown keys raise, naming
    the key: a checkpoint is never loaded half-understood.
    """
    offsets, per_layer, global_map = _layer_maps(interface, state)
    if state is None and len(interface.layers) > 1:
        raise AdapterConfigError("this architecture has several layer stacks; pass state=model.adapter_state")
    stacks = "|".join(re.escape(p) for p in sorted(offsets, key=len, reverse=True))
    pattern = re.compile(
        rf"^(?:.*?\.)?({stacks})\.(\d+)\.(.+?)\.(adapters|loras)\.{re.escape(name)}\.(.+)$")
    inv = re.compile(rf"^(?:.*\.)?invertible_adapters\.{re.escape(name)}\.(.+)$")
    enabled = []
    if isinstance(config, LoRAConfig):
        enabled = [loc for loc, _ in interface.linear_locations(
            attn_matrices=config.attn_matrices if config.selfattn_lora else (),
            intermediate=config.intermediate_lora, output=config.output_lora)]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        m = inv.match(key)
        if m:
            out[f"shared.invertible.{m.group(1)}"] = tensor
            continue
        m = pattern.match(key)
        locations = None
        if m:
            layer_id = offsets[m.group(1)] + int(m.group(2))
            table = global_map if per_layer is None else (per_layer[layer_id] if layer_id < len(per_layer) else {})
            locations = table.get(m.group(3))
        if m is None or not locations:
            raise AdapterConfigError(f"AdapterHub weight {key!r} of adapter {name!r} has no adapterkit counterpart")
        kind, rest = m.group(4), m.group(5)
        if kind == "adapters":
            location = next((loc for loc in locations if loc in interface.residual_sites), None)
            if location is None:
                raise AdapterConfigError(f"AdapterHub weight {key!r}: no bottleneck location at {m.group(3)!r}")
            out[f"layers.{layer_id}.{location}.{_bottleneck_param(rest, config)}"] = tensor
            continue
        parts = [loc for loc in enabled if loc in locations]  # a fused projection holds several, in order
        if not parts:
            raise AdapterConfigError(f"AdapterHub weight {key!r}: the config enables no projection at {m.group(3)!r}")
        scale = config.composition_mode == "scale"  # (IA)^3 keeps only lora_B, shaped (out, 1)
        if scale and rest != "lora_B":
            raise AdapterConfigError(f"unexpected (IA)^3 weight {key!r}")
        for location, chunk in zip(parts, tensor.chunk(len(parts), dim=0)):
            if scale:
                out[f"layers.{layer_id}.{location}.ia3_l"] = chunk.reshape(-1)
            else:
                out[f"layers.{layer_id}.{location}.{rest}"] = chunk.contiguous()
    return out
