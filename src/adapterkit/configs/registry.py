"""Config names (both name generations) and `resolve_config`, which turns any accepted form into a config.

The names are registered by the methods (`MethodSpec.config_names`, registry.py); this module holds only the
table and the lookup, so it knows no method.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

from ..errors import AdapterConfigError
from .base import AdapterConfig
from .parsing import split_config_string
from .union import ConfigUnion

# name -> default config, filled by register_config_name
ADAPTER_CONFIG_MAP: dict[str, AdapterConfig] = {}
# public class name -> config class (`adapterkit.configs.<Name>`), filled by register_config_class
CONFIG_CLASSES: dict[str, type] = {"AdapterConfig": AdapterConfig, "ConfigUnion": ConfigUnion}

DEFAULT_ADAPTER_CONFIG = "seq_bn"

ConfigLike = Union[str, Mapping[str, Any], AdapterConfig, None]


def register_config_name(name: str, config: AdapterConfig) -> None:
    """Register `name` for `config`; a name taken twice is an error."""
    if name in ADAPTER_CONFIG_MAP:
        raise AdapterConfigError(f"adapter config name {name!r} is already registered; pick another name")
    ADAPTER_CONFIG_MAP[name] = config


def register_config_class(public_name: str, cls: type) -> None:
    if CONFIG_CLASSES.get(public_name, cls) is not cls:
        raise AdapterConfigError(f"config class name {public_name!r} is already registered for another class")
    CONFIG_CLASSES[public_name] = cls


def unregister_config_names(names) -> None:
    for name in names:
        ADAPTER_CONFIG_MAP.pop(name, None)


def resolve_config(config: ConfigLike, **overrides: Any) -> AdapterConfig:
    """Accept a config object, a registered name, a ``name[key=value,...]`` string or a dict (`to_dict` form)."""
    if config is None:
        config = DEFAULT_ADAPTER_CONFIG
    if isinstance(config, AdapterConfig):
        resolved = config
    elif isinstance(config, str) and "|" in config:
        # "prefix_tuning|parallel": a union of the parts (each may carry [key=value] overrides)
        resolved = ConfigUnion(*[resolve_config(part) for part in config.split("|")])
    elif isinstance(config, str):
        name, parsed = split_config_string(config)
        base = ADAPTER_CONFIG_MAP.get(name)
        if base is None:
            raise AdapterConfigError(
                f"unknown adapter config name {name!r}; valid names: {', '.join(ADAPTER_CONFIG_MAP)}"
            )
        resolved = base.replace(**parsed) if parsed else base
    elif isinstance(config, Mapping):
        resolved = AdapterConfig.from_dict(config)
    else:
        raise AdapterConfigError(
            f"config must be an AdapterConfig, a config name, a config string or a dict, got {type(config).__name__}"
        )
    if overrides:
        resolved = resolved.replace(**overrides)
    # Every caller gets its own copy, so editing it never changes a registered default.
    return type(resolved).from_dict(resolved.to_dict())
