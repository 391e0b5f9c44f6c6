"""The stand-in interface of a model type adapterkit has no ModelInterface for.

`adapterkit.init` still gives such a model the adapter API: adapters that select their modules by name
(`target_modules`, the LoRA family, as peft) need no interface. Every other adapter needs locations (layers,
attention, FFN, sublayer outputs) and is refused with `reason`, which names the missing interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AdapterError
from .base import ModelInterface
from .registry import get_interface


@dataclass(frozen=True)
class MissingInterface(ModelInterface):
    reason: str = ""


def missing_interface(model_type: str, reason: str) -> MissingInterface:
    return MissingInterface(model_types=(model_type,), embeddings="", layers=(), attention={}, intermediate=(),
                            output=(), residual_sites={}, reason=reason)


def refusal(interface: ModelInterface, config) -> str | None:
    """Why `config` cannot be built on a model with this interface (None: it can). A union needs every member
    to select its modules by name."""
    if not isinstance(interface, MissingInterface):
        return None
    members = list(getattr(config, "configs", None) or [config])
    if all(getattr(m, "target_modules", None) is not None for m in members):
        return None
    return (f"{interface.reason}. Without an interface only adapters that name their modules can be added: "
            "LoRA, (IA)^3, DoRA, VeRA, LoHa or LoKr with target_modules (module names, a regex or 'all-linear', "
            "as peft)")


def interface_or_missing(model_type: str) -> ModelInterface:
    """The registered interface of `model_type`, else a MissingInterface carrying the registry's error."""
    try:
        return get_interface(model_type)
    except AdapterError as e:
        return missing_interface(model_type, str(e).split("; supported:")[0])


__all__ = ["MissingInterface", "interface_or_missing", "missing_interface", "refusal"]
