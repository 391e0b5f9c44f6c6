"""AdapterHub names of ReFT weights: `<layer>.reft_layer.refts.<name>.units.<i>.*` (ours:
`layers.<i>.reft.units.<i>.*`, the same parameter names). The package's files say `architecture: "reft"` and
lack `subtract_projection` (a bare class attribute there): such a file loads as the package reloads it, with
projection subtraction on (so a DiReFT saved by the package is read as NoReFT, as the package itself does)."""

from __future__ import annotations

from typing import Any

from ...errors import AdapterConfigError

LAYER_KIND = "refts"
NEEDS_LOCATION = False  # found by the layer alone: the package hooks the whole layer
MODULE = "reft_layer"


def config_from_hub(data: dict[str, Any]) -> dict[str, Any]:
    if data.pop("output_reft", True) is not True:
        raise AdapterConfigError("AdapterHub ReFT config with output_reft=False adds no intervention in the "
                                 "`adapters` package; adapterkit supports output_reft=True only")
    data.setdefault("subtract_projection", True)
    return data


def config_to_hub(config, out: dict[str, Any]) -> None:
    out["output_reft"] = True


def shared_import(name: str, interface) -> list:
    return []


def shared_export(interface) -> dict[str, str]:
    return {}


def hub_paths(interface) -> dict[str, tuple[str, str]]:
    """Our location -> (the layer itself, the package's module in it)."""
    return {"reft": ("", MODULE)}


def owns(location: str, interface) -> bool:
    return location == "reft"


def import_layer(key: str, layer_id: int, path: str, locations, rest: str, tensor, config, interface, ctx) -> dict:
    if path != MODULE:
        raise AdapterConfigError(f"AdapterHub weight {key!r}: ReFT weights sit in {MODULE!r} of a layer")
    return {f"layers.{layer_id}.reft.{rest}": tensor}


def export_layer(prefix: str, path: str, location: str, param: str, tensor, name: str, config, interface):
    if not path:
        raise AdapterConfigError(f"adapter {name!r}: ReFT weights have no AdapterHub name here")
    return f"{prefix}{path}.{LAYER_KIND}.{name}.{param}", tensor, None
