"""Check a checkpoint against the modules its config would build, without touching the model.

`expected_modules` runs the method's own `build` against the model's `ModelShape` (layers, projections, sizes)
with a detached container that collects the new modules instead of attaching them, on the meta device: a config
that declares huge sizes (LoRA `r=10**8`) allocates nothing, and the expected shapes are compared with the
checkpoint's before anything real is built. Missing and unexpected keys and wrong shapes are found before the
model is changed at all.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from ..configs import AdapterConfig
from ..errors import AdapterError, CheckpointError
from ..registry import build
from ..state import AdapterModules, AdapterState, ModelShape

_LIST_MAX = 6


class _DryRunState(ModelShape):
    """The model's shape (read-only, as `build` reads it) with module registration going to a private container:
    a dry run cannot change the model, since a ModelShape has no method that does."""

    def __init__(self, state: AdapterState):
        super().__init__(state.model, state.interface)
        self.configs = state.configs
        self.modules = AdapterModules()

    def add_layer_module(self, name, layer_id, location, module, *, site, target=None) -> None:
        layers = self.modules.layers
        if str(layer_id) not in layers:
            layers[str(layer_id)] = nn.ModuleDict()
        layers[str(layer_id)][location] = module

    def add_model_module(self, name, key, module, *, site=None, target=None):
        self.modules.shared[key] = module
        return module

    def module_at(self, name, key):
        """The modules built so far in this dry run (a method may look up its own, e.g. Compacter's shared rule)."""
        scope, location = key
        group = self.modules.shared if scope == "model" else (
            self.modules.layers[str(scope)] if str(scope) in self.modules.layers else None)
        return group[location] if group is not None and location in group else None

    def ensure_layer_site(self, layer_id, kind) -> None:
        """Sites are not installed in a dry run."""


def expected_modules(state: AdapterState, name: str, config: AdapterConfig) -> AdapterModules:
    """The modules `add_adapter(name, config)` would create, detached from the model, on the meta device (shapes
    and dtypes only, no storage)."""
    dry = _DryRunState(state)
    with torch.device("meta"):
        build(dry, name, config)
    return dry.modules


def short_list(items, sort: bool = True) -> str:
    """At most a few items, and how many there are in all."""
    items = sorted(items) if sort else list(items)
    text = ", ".join(items[:_LIST_MAX])
    return text + (f", ... ({len(items)} in all)" if len(items) > _LIST_MAX else "")


def non_floating(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """The keys (with their dtype) of `tensors` that are not floating point where the module's tensor is: an
    int or bool file would be cast silently into float weights, so adapters, heads and fusions all refuse it."""
    return [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in sorted(tensors.items())
            if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]


def check_floating(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError (naming `source` and the tensors) if `non_floating` finds any."""
    bad = non_floating(tensors, expected)
    if bad:
        raise CheckpointError(f"{source}: non-floating-point weights: {short_list(bad)}; weights must be floating "
                              "point (float32, float16, bfloat16, ...)")


def fit_problems(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `tensors` from being exactly a module's state dict `expected`: missing and unexpected keys, wrong
    shapes, non-floating-point tensors (empty: they fit)."""
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing weights: {short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected weights: {short_list(unexpected)}")
    wrong = [f"{k} has shape {tuple(tensors[k].shape)}, expected {tuple(expected[k].shape)}"
             for k in sorted(set(expected) & set(tensors)) if tensors[k].shape != expected[k].shape]
    if wrong:
        problems.append("wrong shapes: " + short_list(wrong, sort=False))
    not_float = non_floating(tensors, expected)
    if not_float:
        problems.append(f"non-floating-point weights: {short_list(not_float)}")
    return problems


def check_state_dict(state: AdapterState, name: str, config: AdapterConfig, tensors: Mapping[str, torch.Tensor],
                     source: str) -> None:
    """Raise CheckpointError (naming `source`) unless `tensors` is exactly the state dict of the adapter."""
    try:
        modules = expected_modules(state, name, config)
    except AdapterError as e:
        raise CheckpointError(f"{source}: its adapter config does not fit this model: {e}") from None
    problems = fit_problems(tensors, modules.state_dict())
    if problems:
        raise CheckpointError(f"{source}: does not match the adapter its config describes ({'; '.join(problems)})")
