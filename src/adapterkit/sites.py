"""Attach points: where the model's own forward calls into the active adapters.

A site is installed once per (layer, location) the first time an adapter needs it and removed when the last
adapter there is deleted. At call time it asks the state for the modules the active setup wants there
(a cached tuple), so an inactive or merged adapter costs one dict lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.nn as nn

from .methods.bottleneck import run_residual
from .utils import get_submodule

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces.base import ResidualSite as ResidualSpec
    from .state import AdapterState


class Site:
    """Base: knows its key and state; `collect` picks its modules out of an active adapter list."""

    def __init__(self, state: "AdapterState", key: tuple):
        self.state = state
        self.key = key
        self.merged: str | None = None

    def collect(self, names: list[str]) -> tuple:
        found = []
        for name in names:
            module = self.state.module_at(name, self.key)
            if module is not None and name not in self.state.merged:
                found.append(module)
        return tuple(found)

    def install(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class LinearSite(Site):
    """A forward hook on an nn.Linear: LoRA adds to, (IA)^3 scales, its output."""

    def __init__(self, state, key, target: nn.Linear):
        super().__init__(state, key)
        self.target = target
        self._handle = None

    def install(self) -> None:
        self._handle = self.target.register_forward_hook(self)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __call__(self, module: nn.Module, args: tuple, output: Any):
        modules = self.state.active_at(self.key)
        if not modules:
            return None
        x = args[0]
        for m in modules:
            output = m(x, output)
        return output


class ResidualSite(Site):
    """Takes over `forward` of a post-LN output module: `LN(dropout(dense(h)) + x)` with adapters before the LN.

    The interface names the module's dense / dropout / layer norm; nothing else of the model's code is repeated.
    """

    def __init__(self, state, key, module: nn.Module, spec: "ResidualSpec"):
        super().__init__(state, key)
        self.module = module
        self.dense = get_submodule(module, spec.dense)
        self.dropout = get_submodule(module, spec.dropout)
        self.layer_norm = get_submodule(module, spec.layer_norm)

    def install(self) -> None:
        # An instance attribute shadows the class's forward; nn.Module.__call__ picks it up.
        self.module.forward = self

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)

    def __call__(self, hidden_states, input_tensor, *args, **kwargs):
        h = self.dropout(self.dense(hidden_states))
        return run_residual(self.state.active_at(self.key), h, input_tensor, self.layer_norm)


class InvertibleSite(Site):
    """NICE adapter of the first active adapter: forward after the embeddings, inverse before LM heads."""

    def __init__(self, state, key, embeddings: nn.Module, lm_heads: list[nn.Module]):
        super().__init__(state, key)
        self.embeddings = embeddings
        self.lm_heads = lm_heads
        self._handles: list = []

    def collect(self, names: list[str]) -> tuple:
        # As the anchors: only the first adapter of the setup contributes its invertible adapter.
        return super().collect(names[:1])

    def install(self) -> None:
        self._handles = [self.embeddings.register_forward_hook(self._forward)]
        self._handles += [head.register_forward_pre_hook(self._inverse) for head in self.lm_heads]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward(self, module, args, output):
        modules = self.state.active_at(self.key)
        return modules[0](output) if modules else None

    def _inverse(self, module, args):
        modules = self.state.active_at(self.key)
        if not modules:
            return None
        return (modules[0](args[0], rev=True),) + tuple(args[1:])
