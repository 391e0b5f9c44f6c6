"""Attach points: where the model's own forward calls into the active adapters.

A site is installed once per (layer, location) the first time an adapter needs it and removed when the last
adapter there is deleted. At call time it asks the state for the modules the active setup wants there
(a cached tuple), so an inactive or merged adapter costs one dict lookup.

Site kinds form a small registry (`register_site_kind`): a method asks for a kind by name ("linear", "residual",
"invertible", "prefix", ...); "residual" dispatches once more on the interface's site spec (`ResidualSite` -> a
post-LN output module, `SublayerSite` -> hooks around a sublayer). Adding an architecture never adds a branch here,
and no site knows a method: it runs whatever modules the adapters registered there, through a small protocol.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from ..compose.tree import compile_tree
from ..errors import AdapterError

class Site:
    """Base: knows its key and state; `collect` picks its modules out of an active adapter list."""

    def __init__(self, state, key: tuple):
        self.state = state
        self.key = key

    def collect(self, names: list[str]) -> tuple:
        found = []
        for name in names:
            module = self.state.entry_at(name, self.key)
            if module is not None and name not in self.state.merged:
                found.append(module)
        return tuple(found)

    def in_use(self, names: list[str]) -> bool:
        """Whether any of these adapters has something at this site (else the site is removed)."""
        return any(self.state.entry_at(name, self.key) is not None for name in names)

    def compile(self, state, setup, leaf):
        """The setup as a tree of this site's modules (compose/tree.py); site kinds with their own rules override."""
        return compile_tree(setup, leaf)

    def accept(self, module: nn.Module) -> None:
        """Raise a clear error if `module` cannot run at this site (checked when an adapter is added)."""

    def install(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


_SITE_KINDS: dict[str, Callable[..., Site]] = {}
_RESIDUAL_KINDS: dict[str, type] = {}
# kinds with one site per (layer, kind), whatever per-layer location asked for it (attention: one per module)
PER_KIND: set[str] = set()


def register_site_kind(kind: str, factory: Callable[..., Site], *, per_kind: bool = False) -> None:
    """`factory(state, key, target) -> Site` builds the site a method asks for as `site=kind`; `per_kind`: one
    site per (layer, kind), keyed so, for every location that asks for it."""
    _SITE_KINDS[kind] = factory
    if per_kind:
        PER_KIND.add(kind)


def register_residual_kind(kind: str, site_cls: type) -> None:
    """`site_cls(state, key, layer, spec)` serves interface residual specs whose `kind` is `kind`."""
    _RESIDUAL_KINDS[kind] = site_cls


def make_site(state, key: tuple, kind: str, target: Any) -> Site:
    try:
        factory = _SITE_KINDS[kind]
    except KeyError:
        raise AdapterError(f"unknown site kind {kind!r}; registered: {', '.join(sorted(_SITE_KINDS))}") from None
    return factory(state, key, target)
