"""AdapterHub names of bottleneck weights: `<layer>.<module>.adapters.<name>.adapter_down.0.weight` (ours:
`layers.<i>.<location>.down.weight`), `invertible_adapters.<name>.*` and Compacter's `shared_parameters.<name>.*`.
io/adapterhub.py finds the layer and location; this map names the parameters."""

from __future__ import annotations

import re
from typing import Any
from ...errors import AdapterConfigError
from ...interfaces.base import present

LAYER_KIND = "adapters"  # the key segment of per-layer bottleneck weights
_PARAM = {"adapter_up": "up", "adapter_norm_after": "norm_after", "adapter_norm_before": "norm_before",
          "gate": "gate"}


def config_from_hub(data: dict[str, Any]) -> dict[str, Any]:
    """adapter-transformers 2.x/3.x keep the invertible adapter as a nested dict."""
    if "invertible_adapter" in data:
        inv = data.pop("invertible_adapter") or {}
        if not isinstance(inv, dict):
            raise AdapterConfigError(f"AdapterHub config: invertible_adapter={inv!r} must be an object "
                                     "{'block_type': ..., 'reduction_factor': ...} or null")
        data.setdefault("inv_adapter", inv.get("block_type"))
        data.setdefault("inv_adapter_reduction_factor", inv.get("reduction_factor"))
    return data


def fix_loaded(config, data, weights, name: str):
    """Old task adapters name an invertible adapter in their config without having one; the `adapters` loader
    drops it, and so do we."""
    if (config.inv_adapter and data.get("type") == "text_task"
            and not any(f"invertible_adapters.{name}." in k for k in weights)):
        return config.replace(inv_adapter=None, inv_adapter_reduction_factor=None)
    return config


def _cross_from_mh(interface) -> bool:
    """Where the package's mh_adapter also adapts the cross-attention (BERT-type decoders: the cross-attention
    output is the same module class as the self-attention's)."""
    return interface.adapterhub.get("cross_adapter_from") == "mh_adapter"


def read_config(config, interface, state=None):
    """The package's placement there, in a model with cross-attention layers: its mh_adapter is ours plus
    cross_adapter."""
    site = interface.residual_sites.get("cross_adapter")
    crossed = state is not None and site is not None and any(present(layer, site) for layer in state.layers)
    return config.replace(cross_adapter=True) if _cross_from_mh(interface) and config.mh_adapter and crossed \
        else config


def check_convert(config, interface, what: str) -> None:
    """There, the package has no cross_adapter of its own: one without mh_adapter has no AdapterHub form."""
    if _cross_from_mh(interface) and config.cross_adapter and not config.mh_adapter:
        raise AdapterConfigError(
            f"{what}: in this architecture the `adapters` package adapts the cross-attention with mh_adapter (it "
            "has no cross_adapter location here), so cross_adapter=True without mh_adapter has no AdapterHub "
            "form; set both, or save in the adapterkit format")


HUB_ARCHITECTURE = None  # AdapterHub's `architecture` of a (top-level) bottleneck config


def shared_import(name: str, interface) -> list[tuple[re.Pattern, str]]:
    n = re.escape(name)
    return [(re.compile(rf"^(?:.*\.)?invertible_adapters\.{n}\.(.+)$"), "shared.invertible."),
            (re.compile(rf"^(?:.*\.)?shared_parameters\.{n}\.(.+)$"), "shared.phm.")]


def shared_export(interface) -> dict[str, str]:
    return {"invertible": interface.adapterhub.get("invertible", "invertible_adapters") + ".{name}."}


def owns(location: str, interface) -> bool:
    return location in interface.residual_sites


def import_layer(key: str, layer_id: int, path: str, locations: list[str], rest: str, tensor, config, interface,
                 ctx) -> dict:
    location = next((loc for loc in locations if loc in interface.residual_sites), None)
    if location is None:
        raise AdapterConfigError(f"AdapterHub weight {key!r}: no bottleneck location at {path!r}")
    return {f"layers.{layer_id}.{location}.{_param_from_hub(rest, config)}": tensor}


def export_layer(prefix: str, path: str, location: str, param: str, tensor, name: str, config, interface):
    """(AdapterHub key, tensor, None): bottleneck weights are never parts of a fused tensor."""
    return f"{prefix}{path}.{LAYER_KIND}.{name}.{_param_to_hub(param, config)}", tensor, None


def _param_from_hub(rest: str, config) -> str:
    head, _, tail = rest.partition(".")
    if head == "adapter_down":
        index, _, tail = tail.partition(".")
        # adapter_down is Sequential([LayerNorm if ln_before], Linear or PHMLayer, activation)
        linear_index = 1 if config.ln_before else 0
        return ("down." if int(index) == linear_index else "norm_before.") + tail
    if head in _PARAM:
        return f"{_PARAM[head]}.{tail}"
    if head == "scaling":
        return "scaling"
    raise KeyError(rest)


def _param_to_hub(param: str, config) -> str:
    head, _, tail = param.partition(".")
    if head == "down":
        return f"adapter_down.{1 if config.ln_before else 0}.{tail}"
    if head == "norm_before":
        return f"adapter_down.0.{tail}"
    inverse = {v: k for k, v in _PARAM.items()}
    if head in inverse:
        return f"{inverse[head]}.{tail}"
    if head == "scaling":
        return "scaling"
    raise KeyError(param)  # pragma: no cover - BottleneckAdapter has no other parameters
