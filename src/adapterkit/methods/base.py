"""What every method family provides, and the registry that maps a config's `architecture` to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import AdapterError

if TYPE_CHECKING:  # pragma: no cover
    from ..configs import AdapterConfig
    from ..state import AdapterState


class Method:
    """A method family. `build` creates the adapter's modules and asks the state for the sites they need."""

    architecture: str = ""

    def build(self, state: "AdapterState", name: str, config: "AdapterConfig") -> None:
        raise NotImplementedError

    def merge(self, state: "AdapterState", name: str, config: "AdapterConfig") -> None:
        raise AdapterError(
            f"adapter {name!r} is a {self.architecture} adapter and cannot be merged into the model weights; "
            "only LoRA and (IA)^3 adapters can be merged"
        )

    def reset(self, state: "AdapterState", name: str, config: "AdapterConfig") -> None:
        self.merge(state, name, config)  # same error: nothing to reset

    def before_forward(self, state: "AdapterState", names: set[str]) -> None:
        """Called by the model's pre-forward hook with the names of the adapters this forward uses: work shared by
        all layers goes here, outside every layer (prefix tuning computes its prefixes)."""


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    _METHODS[method.architecture] = method
    return method


def before_forward(state: "AdapterState", names: set[str]) -> None:
    """Every method's `before_forward` (most do nothing)."""
    for method in _METHODS.values():
        method.before_forward(state, names)


def method_for(config: "AdapterConfig") -> Method:
    try:
        return _METHODS[config.architecture]
    except KeyError:
        raise AdapterError(
            f"no method implements architecture {config.architecture!r}; available: {', '.join(sorted(_METHODS))}"
        ) from None
