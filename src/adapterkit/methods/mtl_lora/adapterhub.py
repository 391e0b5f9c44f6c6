"""AdapterHub names of MTL-LoRA weights: `<layer>.<projection>.loras.<name>.{lora_A, lora_B, weights,
task_specific.values}` (ours: `layers.<i>.<location>.{lora_A, lora_B, weights, task_specific}`), same shapes.

The `adapters` package runs MTL-LoRA on whole projections only: on a fused one (GPT-2's c_attn) its forward fails,
so such adapters have no AdapterHub form and are refused both ways."""

from __future__ import annotations

from typing import Any

from ...errors import AdapterConfigError
from ...interfaces.base import FusedSlice

LAYER_KIND = "loras"
_HUB = {"task_specific": "task_specific.values"}
_OURS = {v: k for k, v in _HUB.items()}
_PARAMS = ("lora_A", "lora_B", "weights", "task_specific.values", "gate.weight", "gate.bias")


def config_to_hub(config, out: dict[str, Any]) -> None:
    if "o" in config.attn_matrices:
        raise AdapterConfigError(
            "AdapterHub MTL-LoRA cannot target the attention output projection ('o' in attn_matrices; the "
            "`adapters` package silently ignores it); save in the adapterkit format instead")


def owns(location: str, interface) -> bool:
    return location in dict(interface.all_linear_locations())


def enabled_locations(config, interface) -> list[str]:
    return [loc for loc, _ in interface.linear_locations(
        attn_matrices=config.attn_matrices if config.selfattn_lora else (),
        intermediate=config.intermediate_lora, output=config.output_lora)]


def _check_location(interface, location: str, what: str) -> None:
    if location in interface.adapterhub_differs:
        raise AdapterConfigError(
            f"{what}: {location!r} has an AdapterHub namesake on another module in this architecture "
            f"({interface.adapterhub_differs[location]}); no exact conversion exists")
    if isinstance(dict(interface.all_linear_locations()).get(location), FusedSlice):
        raise AdapterConfigError(
            f"{what}: {location!r} is part of a fused projection here; the `adapters` package cannot run MTL-LoRA "
            "on fused projections (GPT-2's c_attn), so there is no AdapterHub form; leave those matrices out or "
            "use the adapterkit format")


def prepare_import(config, interface, present_here, name: str) -> dict:
    return {"enabled": enabled_locations(config, interface)}


def import_layer(key: str, layer_id: int, path: str, locations: list[str], rest: str, tensor, config, interface,
                 ctx) -> dict:
    parts = [loc for loc in ctx["enabled"] if loc in locations]
    if not parts:
        raise AdapterConfigError(f"AdapterHub weight {key!r}: the config enables no projection at {path!r}")
    if rest not in _PARAMS:
        raise AdapterConfigError(f"unexpected MTL-LoRA weight {key!r}; expected one of {', '.join(_PARAMS)}")
    for location in parts:
        _check_location(interface, location, f"AdapterHub weight {key!r}")
    return {f"layers.{layer_id}.{parts[0]}.{_OURS.get(rest, rest)}": tensor}


def export_layer(prefix: str, path: str, location: str, param: str, tensor, name: str, config, interface):
    """(AdapterHub key, tensor, None: never a part of a fused projection)."""
    _check_location(interface, location, f"adapter {name!r}")
    return f"{prefix}{path}.{LAYER_KIND}.{name}.{_HUB.get(param, param)}", tensor, None


def shared_import(name: str, interface) -> list:
    return []


def shared_export(interface) -> dict[str, str]:
    return {}
