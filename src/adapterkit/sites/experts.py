"""The experts site: adapters on a mixture-of-experts module's 3D weight (nn/experts.py) change the weight its
kernels read, for the duration of one forward.

The experts module computes all its experts from `gate_up_proj` / `down_proj` itself (a loop, grouped or batched
matmuls, whichever `config._experts_implementation` picks), so there is no per-expert call to hook. Instead its
`forward` is taken over (an instance attribute, as the projection site does): while it runs, the parameter is
replaced in the module's `_parameters` by the adapted tensor `f(W)` (autograd flows through it into the adapters),
and put back afterwards, also when the forward raises. Every expert thus computes with exactly its adapted weight,
whatever kernel runs; the model's parameters and state-dict keys never change. One wrapper per module serves all its
adapted parameters (`gate_up_proj` and `down_proj` are two sites).

Its modules' protocol (no import): `module.adapt(target, weight, bias) -> (weight, bias)` on the (E, out, in)
weight and (E, out) bias (or None); several active adapters apply one after the other (a Stack: LoRA updates add up,
(IA)^3 scales multiply). Other compositions and per-example routing need per-token outputs and are refused.
"""

from __future__ import annotations

import torch.nn as nn

from ..compose.routing import Routed
from ..errors import AdapterError
from .base import Site, register_site_kind

_WRAPPER = "_adapterkit_experts"


class _ExpertsForward:
    """The one forward wrapper of an experts module: swaps in the adapted tensors of every site on it."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.sites: dict[str, "ExpertsSite"] = {}
        self.inner = module.__dict__.get("forward")  # an instance-level forward that was there before ours

    def __call__(self, *args, **kwargs):
        params = self.module._parameters
        swapped = {}
        for site in self.sites.values():
            swapped.update(site.adapted())
        if not swapped:
            return self.run(*args, **kwargs)
        originals = {name: params[name] for name in swapped}
        params.update(swapped)  # plain tensors, for this call only (nn.Module.__getattr__ reads _parameters)
        try:
            return self.run(*args, **kwargs)
        finally:
            params.update(originals)

    def run(self, *args, **kwargs):
        if self.inner is not None:
            return self.inner(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)


class ExpertsSite(Site):
    """Adapters on one 3D experts parameter (`target`: an `ExpertsTarget`)."""

    def __init__(self, state, key, target):
        super().__init__(state, key)
        self.target = target

    def adapted(self) -> dict:
        """{parameter name: adapted tensor} (and its bias) while an unmerged adapter runs here, else {}."""
        plan = self.state.active_at(self.key)
        if not plan:
            return {}
        if type(plan) is not tuple:
            kind = "per-example routing" if isinstance(plan, Routed) else f"a {type(plan).__name__} composition"
            raise AdapterError(f"adapters on the fused mixture-of-experts weight {type(self.target.module).__name__}."
                               f"{self.target.name} run alone or stacked, not in {kind} (it changes the weight "
                               "every token shares); activate them one at a time or in a Stack")
        target = self.target
        weight = target.as_math(target.parameter)
        bias_param = target.bias_parameter
        bias = bias_param
        for module in plan:
            weight, bias = module.adapt(target, weight, bias)
        out = {target.name: target.as_stored(weight)}
        if bias is not bias_param:
            out[f"{target.name}_bias"] = bias
        return out

    def _wrapper(self, create: bool) -> _ExpertsForward | None:
        module = self.target.module
        wrapper = module.__dict__.get(_WRAPPER)
        if wrapper is None and create:
            wrapper = _ExpertsForward(module)
            module.__dict__[_WRAPPER] = wrapper
            module.forward = wrapper
        return wrapper

    def install(self) -> None:
        self._wrapper(create=True).sites[self.target.name] = self

    def remove(self) -> None:
        wrapper = self._wrapper(create=False)
        if wrapper is None:
            return
        wrapper.sites.pop(self.target.name, None)
        if wrapper.sites:
            return
        module = self.target.module
        del module.__dict__[_WRAPPER]
        if module.__dict__.get("forward") is wrapper:
            if wrapper.inner is None:
                del module.__dict__["forward"]
            else:
                module.forward = wrapper.inner
        # else another wrapper was put over ours: it stays as a pass-through (no sites left)

    def sync(self, unmerged: list[str]) -> None:
        """Only while an unmerged adapter is here: a fully merged experts module runs exactly as a plain one."""
        if self.in_use(unmerged):
            self.install()
        else:
            self.remove()


register_site_kind("experts", ExpertsSite)
