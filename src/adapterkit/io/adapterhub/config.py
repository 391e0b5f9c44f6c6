"""AdapterHub config dicts <-> adapterkit configs (same field names; each method's map fixes its own forms)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from ...configs import AdapterConfig, ConfigUnion
from ...errors import AdapterConfigError
from ...registry import members, spec_for, specs, spec_named

# AdapterHub fields adapterkit does not implement, with the value that means "off".
_INERT_FIELDS = {
    "init_weights_seed": None, "stochastic_depth": 0.0, "vera_d": None, "vera_b": None,
    "dtype": None, "use_dora": False,
}


def hub_map(config_or_method):
    """The "adapterhub" map of a single-method config's method, or None."""
    return spec_for(config_or_method).formats.get("adapterhub")


def hub_maps() -> list:
    return [spec.formats["adapterhub"] for spec in specs() if "adapterhub" in spec.formats]


def config_from_adapterhub(data: Mapping[str, Any]) -> AdapterConfig:
    """An AdapterHub config dict (`config.to_dict()`, or `adapter_config.json["config"]`) as an adapterkit config."""
    if not isinstance(data, Mapping):
        raise AdapterConfigError(f"an AdapterHub adapter config must be an object, found {type(data).__name__}")
    data = dict(data.get("config", data)) if "config" in data and isinstance(data["config"], Mapping) else dict(data)
    method = data.pop("architecture", None) or "bottleneck"
    if not isinstance(method, str):
        raise AdapterConfigError(f"AdapterHub config: 'architecture' must be a string, found {method!r}")
    if method == ConfigUnion.method:
        members = data.get("configs", [])
        if not isinstance(members, list) or set(data) - {"configs"}:
            raise AdapterConfigError(f"an AdapterHub union config needs exactly the key 'configs' (a list of "
                                     f"configs); got {data!r}")
        return ConfigUnion(*[config_from_adapterhub(member) for member in members])
    supported = [spec.name for spec in specs() if "adapterhub" in spec.formats]
    own = {f.name for f in fields(spec_for(method).config)} if method in supported else set()
    for key, off in _INERT_FIELDS.items():
        if key in data and key not in own and data.pop(key) not in (off,):  # a method's own field is read
            raise AdapterConfigError(f"AdapterHub config sets {key!r}, which adapterkit does not support yet")
    if method not in supported:
        raise AdapterConfigError(
            f"AdapterHub architecture {method!r} is not supported yet; supported: {', '.join(supported)}, union"
        )
    fix = getattr(hub_map(method), "config_from_hub", None)
    if fix is not None:
        data = fix(data)
    return spec_for(method).config.from_dict(data)


def config_to_adapterhub(config: AdapterConfig) -> dict[str, Any]:
    """adapterkit config -> the `config` dict AdapterHub's `AdapterConfig.load` accepts (same field names)."""
    for member in members(config):
        if hub_map(member) is None:
            labels = ", ".join(s.label for s in specs() if "adapterhub" in s.formats)
            raise AdapterConfigError(f"{type(member).__name__} has no AdapterHub form; supported: {labels}")
    out = config.to_dict()
    hub_members = out["configs"] if isinstance(config, ConfigUnion) else [out]
    for member, data in zip(members(config), hub_members):
        fix = getattr(hub_map(member), "config_to_hub", None)
        if fix is not None:
            fix(member, data)
    top = hub_map(config) if not isinstance(config, ConfigUnion) else None
    if hasattr(top, "HUB_ARCHITECTURE"):
        out["architecture"] = top.HUB_ARCHITECTURE
    return out


def check_convert(config: AdapterConfig, interface, what: str) -> None:
    """Each member's method may refuse a conversion on this architecture (T5 prefixes without shift_positions)."""
    for member in members(config):
        check = getattr(hub_map(member), "check_convert", None)
        if check is not None:
            check(member, interface, what)


def read_config(config: AdapterConfig, interface, state=None) -> AdapterConfig:
    """The package's semantics on this architecture (and model `state`, where given), member by member (T5
    prefixes: shift_positions; BERT decoders: mh_adapter on the cross-attention too)."""
    fixed = []
    for member in members(config):
        fix = getattr(hub_map(member), "read_config", None)
        fixed.append(member if fix is None else fix(member, interface, state))
    return ConfigUnion(*fixed) if isinstance(config, ConfigUnion) else fixed[0]


def relocate(config: AdapterConfig, weights: Mapping[str, Any], state, name: str):
    """Where the `adapters` package places a method's modules elsewhere on this architecture, the method may take
    the checkpoint in a form that keeps the package's placement (LoRA / (IA)^3 on Llama's FFN: module-targeted):
    (config, adapterkit tensors), or None to read it the usual way."""
    if isinstance(config, ConfigUnion):
        return None
    fn = getattr(hub_map(config), "relocate", None)
    return None if fn is None else fn(config, weights, state, name)


def fix_loaded(config: AdapterConfig, data: Mapping[str, Any], weights: Mapping[str, Any], name: str) -> AdapterConfig:
    """The method's fix of what an old checkpoint's config says, given its `adapter_config.json` and weights.

    Only a single-method config is fixed, as the `adapters` loader does."""
    if isinstance(config, ConfigUnion):
        return config
    fix = getattr(hub_map(config), "fix_loaded", None)
    return config if fix is None else fix(config, data, weights, name)


def fix_legacy_dict(source, data: dict[str, Any], version: str) -> dict[str, Any]:
    """The method's fix of a config dict written by an older `adapters` version (`version`: the file's)."""
    method = data.get("architecture") or "bottleneck"
    spec = spec_named(method) if isinstance(method, str) else None
    fix = getattr(spec.formats.get("adapterhub") if spec else None, "fix_legacy_dict", None)
    return data if fix is None else fix(source, data, version)
