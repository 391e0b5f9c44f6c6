"""The projection site: LoRA-type modules add to or scale a projection's output (or its slice of a fused one).

Its modules' protocol: `module(x, out)`; `run_whole` (None, or a callable computing the whole projection's
output when the module runs alone there, returning None where it cannot); see compose/projection.py for the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.nn as nn

from ..compose import projection as compose_projection
from ..compose.routing import Routed
from ..compose.tree import Leaf
from ..errors import AdapterError
from .base import Site, register_site_kind

if TYPE_CHECKING:  # pragma: no cover
    from ..projection import Projection


class ProjectionSite(Site):
    """LoRA adds to, (IA)^3 scales, a projection's output (or its slice of a fused output).

    A whole projection's `forward` is taken over (an instance attribute, a bound method of the site, so
    `copy.deepcopy(model)` keeps working): a module that runs alone there may compute the whole output itself
    (`run_whole`: LoRA's fused autograd node, (IA)^3's scaled input); anything else runs the module's own forward
    and then the composition. A fused projection's slice keeps a forward hook (several sites share the module). Either
    way the projection's own adapters run before any other forward hook on the module.
    """

    def __init__(self, state, key, target: "Projection"):
        super().__init__(state, key)
        self.target = target
        self._handle = None
        self._installed = False
        self._bypass = False
        self._inner = None  # an instance-level forward that was there before ours (another wrapper), if any
        self._whole = target.rows is None

    def install(self) -> None:
        if self.target.rows is not None:
            if self._handle is None:
                self._handle = self.target.module.register_forward_hook(self, prepend=True)
        elif not self._installed:
            module = self.target.module
            self._inner = module.__dict__.get("forward")
            module.forward = self._forward
            self._installed = True
        self._bypass = False

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._installed:
            module = self.target.module
            if getattr(module.__dict__.get("forward"), "__self__", None) is not self:
                # another wrapper was put over ours since: we cannot unlink, so we stay as a pass-through
                self._bypass = True
                return
            if self._inner is None:
                del module.__dict__["forward"]
            else:
                module.forward = self._inner
            self._inner = None
            self._installed = False

    def sync(self, unmerged: list[str]) -> None:
        """Keep the hook / forward wrapper only while an unmerged adapter is here: fully merged projections run
        exactly as plain ones (no Python code of ours on the forward path)."""
        if self.in_use(unmerged):
            self.install()
        else:
            self.remove()

    def __call__(self, module: nn.Module, args: tuple, output: Any):
        modules = self.state.active_at(self.key)
        if not modules:
            return None
        _refuse_meta(self.state, modules, args[0])
        task_ids = self.state.record.task_ids
        return self.target.apply(output, lambda out: compose_projection.run(modules, args[0], out, task_ids))

    def _forward(self, *args, **kwargs):
        module = self.target.module
        modules = () if self._bypass else self.state.active_at(self.key)
        x = args[0] if args else next(iter(kwargs.values()), None)
        if modules:
            _refuse_meta(self.state, modules, x)
        if self._whole and type(modules) is tuple and len(modules) == 1 and self._inner is None:
            run_whole = modules[0].run_whole
            if run_whole is not None:
                out = run_whole(module, x, self.target.transposed, args, kwargs)
                if out is not None:
                    return out
        if self._inner is not None:
            out = self._inner(*args, **kwargs)
        else:
            out = type(module).forward(module, *args, **kwargs)
        if not modules:
            return out
        return compose_projection.run(modules, x, out, self.state.record.task_ids)


def _refuse_meta(state, plan, x) -> None:
    """Raise if a module of `plan` has weights on the meta device while `x` is real: torch multiplies a real input
    with a meta weight without complaint (garbage values, then NaN). It runs at every call, so it first asks the
    state whether any adapter is on the meta device at all (a set `.to()` keeps current); only then it looks at the modules' parameters (their own, or their submodules' if they have none)."""
    if not state.on_meta or not isinstance(x, torch.Tensor) or x.is_meta:
        return
    for module in (plan if type(plan) is tuple else _plan_modules(plan)):
        for param in (module._parameters.values() if module._parameters else module.parameters()):
            if param is not None and param.is_meta:
                name = next((n for n, entry in state.container.items()
                             if any(m is module for m in entry.modules())), "?")
                raise AdapterError(
                    f"adapter {name!r} has weights on the meta device (no data) but runs on inputs on {x.device}; "
                    f"move it to the model's device with model.adapter_to({name!r}, device=...) and load its "
                    "weights (or load the adapter again)")


def _plan_modules(plan) -> Iterator[nn.Module]:
    """The modules of a composed or routed plan (compose/tree.py, compose/routing.py)."""
    if type(plan) is tuple:
        yield from plan
    elif isinstance(plan, Routed):
        for group, _ in plan.groups:
            yield from _plan_modules(group)
    elif isinstance(plan, Leaf):
        yield plan.module
    else:
        for child in getattr(plan, "children", ()):
            if child is not None:
                yield from _plan_modules(child)


register_site_kind("linear", ProjectionSite)
