"""ConfigUnion: each member's method builds into the same adapter (MAM, UniPELT, ...)."""

from __future__ import annotations

from ..errors import AdapterError
from .base import Method, method_for, register_method


class UnionMethod(Method):
    architecture = "union"

    def build(self, state, name, config) -> None:
        for member in config:
            method_for(member).build(state, name, member)

    def merge(self, state, name, config) -> None:
        raise AdapterError(
            f"adapter {name!r} is a union of {', '.join(m.architecture for m in config)} and cannot be merged; "
            "only LoRA and (IA)^3 adapters can be merged"
        )


register_method(UnionMethod())
