"""model_type -> ModelInterface. Built-in architectures register on import; users may register their own."""

from __future__ import annotations

from ..errors import AdapterError
from .base import ModelInterface

_INTERFACES: dict[str, ModelInterface] = {}


def register_interface(interface: ModelInterface, *, overwrite: bool = False) -> ModelInterface:
    for model_type in interface.model_types:
        if model_type in _INTERFACES and not overwrite:
            raise AdapterError(f"an interface for model_type {model_type!r} is already registered")
        _INTERFACES[model_type] = interface
    return interface


def get_interface(model_type: str) -> ModelInterface:
    try:
        return _INTERFACES[model_type]
    except KeyError:
        raise AdapterError(
            f"no adapter interface for model_type {model_type!r}; supported: {', '.join(sorted(_INTERFACES))}. "
            "Describe the architecture with adapterkit.ModelInterface and pass it as init(model, interface=...)"
        ) from None


def supported_model_types() -> list[str]:
    return sorted(_INTERFACES)
