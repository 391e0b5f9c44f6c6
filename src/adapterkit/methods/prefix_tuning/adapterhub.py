"""AdapterHub names of prefix-tuning weights: the `adapters` prefix pool
`prefix_tuning.prefix_tunings.<name>.<group>.*` (ours: `shared.prefix`, `shared.prefix_encoder`,
`shared.prefix_cross`) and the gates `<layer>.<attention>.prefix_tuning.prefix_gates.<name>.*` (ours:
`layers.<i>.prefix_gate` / `cross_prefix_gate`). T5's relative position bias: see `shift_positions`."""

from __future__ import annotations

import re
from typing import Any

from ...configs.union import ConfigUnion
from ...errors import AdapterConfigError

LAYER_KIND = "prefix_tuning.prefix_gates"
NEEDS_LOCATION = False  # gates are found by their attention module, not by an adapter location
# prefix gate location -> the interface field naming the attention module that holds it
GATE_ATTENTION = {"prefix_gate": "self_attention", "cross_prefix_gate": "cross_attention"}


def groups(interface) -> dict[str, str]:
    """adapterkit's prefix module key -> the group the `adapters` prefix pool keeps it under."""
    hub = interface.adapterhub
    return {"prefix": hub.get("prefix", "self_prefix"), "prefix_encoder": hub.get("prefix_encoder", "encoder_prefix"),
            "prefix_cross": hub.get("prefix_cross", "cross_prefix")}


def check_convert(config, interface, what: str) -> None:
    """Where the model has a relative position bias (T5), the package's prefix tuning is `shift_positions=True`:
    refuse converting a prefix adapter without it, either way."""
    if interface.position_bias and not config.shift_positions:
        raise AdapterConfigError(
            f"{what}: in this architecture the `adapters` package computes prefix tuning with the relative position "
            "bias over prefix and sequence together (every real key prefix_length positions further from its "
            "query); that is PrefixTuningConfig(shift_positions=True), which AdapterHub loading sets; or save in "
            "the adapterkit format")


def read_config(config, interface, state=None):
    """The package's prefix semantics on a model with a relative position bias: shift_positions on."""
    return config.replace(shift_positions=True) if interface.position_bias else config


def with_shifted_prefix(config):
    """`config` with shift_positions on its prefix tuning (itself or a union member): the package's semantics."""
    if isinstance(config, ConfigUnion):
        return ConfigUnion(*[with_shifted_prefix(member) for member in config])
    return config.replace(shift_positions=True) if config.method == "prefix_tuning" else config


def config_to_hub(config, out: dict[str, Any]) -> None:
    out.pop("shift_positions", None)  # adapterkit's field: the package knows one behaviour (see T5 prefixes)


def _pooled(group: str) -> bool:
    """Whether a group names its whole pool path (`{name}` in it: one pool per side of an EncoderDecoderModel)."""
    return "{name}" in group


def shared_import(name: str, interface) -> list[tuple[re.Pattern, str]]:
    n = re.escape(name)
    out = []
    for ours, group in groups(interface).items():
        side = ""
        if _pooled(group):  # its side's pool, or that pool's alias in one of the side's layers
            side, _, group = group.partition("prefix_tuning.prefix_tunings.{name}.")
        out.append((re.compile(rf"^{re.escape(side)}(?:.*\.)?prefix_tunings\.{n}\.{re.escape(group)}\.(.+)$"),
                    f"shared.{ours}."))
    return out


def shared_export(interface) -> dict[str, str]:
    return {ours: group + "." if _pooled(group) else f"prefix_tuning.prefix_tunings.{{name}}.{group}."
            for ours, group in groups(interface).items()}


def attention_hub_path(interface, field: str) -> str | None:
    """AdapterHub path of a layer's self- or cross-attention module (ViT: its 4.x name), or None."""
    path = interface.adapterhub.get(field, getattr(interface, field))
    return path.rstrip("?") if path else None


def hub_paths(interface) -> dict[str, tuple[str, str]]:
    """Gate location -> (the interface path of its attention module, its AdapterHub path)."""
    out = {}
    for location, field in GATE_ATTENTION.items():
        ours, path = getattr(interface, field), attention_hub_path(interface, field)
        if path and ours:
            out[location] = (ours, path)
    return out


def owns(location: str, interface) -> bool:
    return location in GATE_ATTENTION


def import_layer(key: str, layer_id: int, path: str, locations, rest: str, tensor, config, interface, ctx) -> dict:
    gate = "cross_prefix_gate" if path == attention_hub_path(interface, "cross_attention") else "prefix_gate"
    return {f"layers.{layer_id}.{gate}.{rest}": tensor}


def export_layer(prefix: str, path: str, location: str, param: str, tensor, name: str, config, interface):
    return f"{prefix}{path}.{LAYER_KIND}.{name}.{param}", tensor, None
