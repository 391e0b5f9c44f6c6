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

from ..configs import AdapterConfig, BnConfig, LoRAConfig
from ..errors import AdapterConfigError
from ..interfaces.base import ModelInterface

# AdapterHub fields adapterkit does not implement, with the value that means "off".
_INERT_FIELDS = {
    "init_weights_seed": None, "use_gating": False, "cross_adapter": False, "phm_layer": False,
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


def _locations(interface: ModelInterface) -> dict[str, str]:
    """Model-relative module path (within a layer) -> adapterkit location key."""
    out = {site.module: location for location, site in interface.residual_sites.items()}
    for location, path in interface.linear_locations(attn_matrices=("q", "k", "v", "o"), intermediate=True,
                                                     output=True):
        out[path] = location
    return out


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
                               config: AdapterConfig) -> dict[str, torch.Tensor]:
    """AdapterHub weights of adapter `name` -> the state dict of `model.adapterkit[name]`.

    Unknown keys raise, naming the key: a checkpoint is never loaded half-understood.
    """
    locations = _locations(interface)
    layers = re.escape(interface.layers)
    pattern = re.compile(rf"^(?:.*?\.)?{layers}\.(\d+)\.(.+?)\.(adapters|loras)\.{re.escape(name)}\.(.+)$")
    inv = re.compile(rf"^(?:.*\.)?invertible_adapters\.{re.escape(name)}\.(.+)$")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        m = inv.match(key)
        if m:
            out[f"shared.invertible.{m.group(1)}"] = tensor
            continue
        m = pattern.match(key)
        location = locations.get(m.group(2)) if m else None
        if m is None or location is None:
            raise AdapterConfigError(f"AdapterHub weight {key!r} of adapter {name!r} has no adapterkit counterpart")
        layer_id, kind, rest = m.group(1), m.group(3), m.group(4)
        prefix = f"layers.{layer_id}.{location}."
        if kind == "adapters":
            out[prefix + _bottleneck_param(rest, config)] = tensor
        elif config.composition_mode == "scale":  # (IA)^3 keeps only lora_B, shaped (out, 1)
            if rest != "lora_B":
                raise AdapterConfigError(f"unexpected (IA)^3 weight {key!r}")
            out[prefix + "ia3_l"] = tensor.reshape(-1)
        else:
            out[prefix + rest] = tensor
    return out


def fusion_state_dict_from_adapterhub(weights: Mapping[str, torch.Tensor], fusion_name: str,
                                      interface: ModelInterface) -> dict[str, torch.Tensor]:
    """AdapterHub AdapterFusion weights (`...layer.3.output.adapter_fusion_layer.<a,b>.query.weight`) -> the state
    dict of `model.adapterkit_fusion[<a,b>]` (`layers.3.output_adapter.query.weight`). Unknown keys raise."""
    locations = _locations(interface)
    layers = re.escape(interface.layers)
    pattern = re.compile(rf"^(?:.*?\.)?{layers}\.(\d+)\.(.+?)\.adapter_fusion_layer\.{re.escape(fusion_name)}\.(.+)$")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        m = pattern.match(key)
        location = locations.get(m.group(2)) if m else None
        if location is None:
            raise AdapterConfigError(f"AdapterHub weight {key!r} of fusion {fusion_name!r} has no adapterkit "
                                     "counterpart")
        out[f"layers.{m.group(1)}.{location}.{m.group(3)}"] = tensor
    return out
