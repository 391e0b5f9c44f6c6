"""Adapter configs: the base dataclass, the union of methods, the name registry and the config-string parser.

Each method's config classes live in its folder (`adapterkit.methods.<name>.config`) and are registered when
`adapterkit` is imported; `adapterkit.configs.<Name>` finds them in that catalogue, so this package knows no
method.
"""

from .base import AdapterConfig
from .registry import ADAPTER_CONFIG_MAP, CONFIG_CLASSES, DEFAULT_ADAPTER_CONFIG, resolve_config
from .union import ConfigUnion


def __getattr__(name: str):
    try:
        return CONFIG_CLASSES[name]
    except KeyError:
        raise AttributeError(f"module 'adapterkit.configs' has no attribute {name!r}") from None


__all__ = ["AdapterConfig", "ConfigUnion", "ADAPTER_CONFIG_MAP", "DEFAULT_ADAPTER_CONFIG", "resolve_config"]
