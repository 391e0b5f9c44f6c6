"""Residual sites: bottleneck-type modules (and AdapterFusion) between a sublayer's output and its residual add.

`PostLNSite` takes over a post-LN output module (BERT's `BertOutput`); `SublayerHookSite` hooks a sublayer whose
residual add is in the layer's own forward. Their modules' protocol is compose/residual.py's.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch.nn as nn

from ..compose import residual as compose_residual
from ..errors import AdapterError
from ..interfaces.base import site_in
from ..utils import get_submodule
from .base import _RESIDUAL_KINDS, Site, register_residual_kind, register_site_kind

if TYPE_CHECKING:  # pragma: no cover
    from ..interfaces.base import ResidualSite as ResidualSpec, SublayerSite as SublayerSpec


class PostLNSite(Site):
    """Takes over `forward` of a post-LN output module: `LN(dropout(dense(h)) + x)` with adapters before the LN.

    The interface names the module's dense / dropout / layer norm; nothing else of the model's code is repeated.
    """

    def __init__(self, state, key, layer: nn.Module, spec: "ResidualSpec"):
        super().__init__(state, key)
        self.module = get_submodule(layer, spec.module)
        self.dense = get_submodule(self.module, spec.dense)
        self.dropout = get_submodule(self.module, spec.dropout) if spec.dropout else nn.Identity()
        self.layer_norm = get_submodule(self.module, spec.layer_norm) if spec.layer_norm else None

    def compile(self, state, setup, leaf):
        return compose_residual.residual_plan(state, self, setup, leaf)

    def install(self) -> None:
        # An instance attribute shadows the class's forward; nn.Module.__call__ picks it up.
        self.module.forward = self

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)

    def __call__(self, hidden_states, input_tensor, *args, **kwargs):
        h = self.dropout(self.dense(hidden_states))
        return compose_residual.run(self.state.active_at(self.key), h, input_tensor, self.layer_norm)


class SublayerHookSite(Site):
    """Hooks around a sublayer whose residual add is in the layer's own forward.

    A forward pre-hook on the `residual` module keeps x (per thread); a forward hook on the `output` module
    replaces h by h' such that the layer's own `h' + x` (then its norm, in post-LN layers) gives what the
    adapters want.
    """

    def __init__(self, state, key, layer: nn.Module, spec: "SublayerSpec"):
        super().__init__(state, key)
        self.spec = spec
        self.output = get_submodule(layer, spec.output)
        self.residual = get_submodule(layer, spec.residual)
        self.layer_norm = get_submodule(layer, spec.layer_norm) if spec.layer_norm else None
        self._kept = threading.local()
        self._handles: list = []
        self._skips_norm = False  # an adapter here has original_ln_after=False
        self._norm_handle = None

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle of the model: the per-thread slot is not state
        return {k: v for k, v in self.__dict__.items() if k != "_kept"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._kept = threading.local()

    def compile(self, state, setup, leaf):
        return compose_residual.residual_plan(state, self, setup, leaf)

    def accept(self, module: nn.Module) -> None:
        config = getattr(module, "config", None)
        if self.layer_norm is not None and config is not None and not getattr(config, "original_ln_after", True):
            self._skips_norm = True  # the layer's own norm must be bypassed for it (`_bypass_norm`)
            if self._handles and self._norm_handle is None:  # installed already: hook the norm now
                self._hook_norm()

    def install(self) -> None:
        self._handles = [self.residual.register_forward_pre_hook(self._keep, with_kwargs=True),
                         self.output.register_forward_hook(self._replace)]
        if self._skips_norm:
            self._hook_norm()

    def _hook_norm(self) -> None:
        """Only sites with such an adapter hook the layer's norm: no hook call on every other forward."""
        self._norm_handle = self.layer_norm.register_forward_hook(self._bypass_norm)
        self._handles.append(self._norm_handle)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._norm_handle = None
        self._kept = threading.local()

    def _keep(self, module, args, kwargs):
        if self.state.active_at(self.key):
            self._kept.x = kwargs[self.spec.residual_arg] if self.spec.residual_arg in kwargs else args[0]

    def _replace(self, module, args, output):
        x = getattr(self._kept, "x", None)
        self._kept.x = None
        modules = self.state.active_at(self.key)
        if not modules or x is None:
            return None
        h = output[0] if isinstance(output, tuple) else output
        if self._skips_norm and not self._finishes_with_norm(modules):
            # original_ln_after=False in a layer that norms `h' + x` itself: h' = (the adapters' finished output)
            # - x, and the layer's norm is skipped for this call (`_bypass_norm`), so the layer returns that output
            new = compose_residual.run(modules, h, x, self.layer_norm) - x
            self._kept.bypass = True
        else:
            new = compose_residual.run(modules, h, x, self.layer_norm, layer_adds_residual=True)
        return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new

    def _finishes_with_norm(self, modules) -> bool:
        """Whether the layer's own norm ends the active adapters' computation here (a Stack's last adapter decides,
        as compose/residual.py's `finish`); other setups with such an adapter are refused."""
        if type(modules) is not tuple:
            raise AdapterError(
                f"original_ln_after=False at {self.key[1]} of layer {self.key[0]} runs alone or in a Stack here: "
                "this layer norms the sublayer output plus the residual itself, which is skipped for it")
        return getattr(getattr(modules[-1], "config", None), "original_ln_after", True)

    def _bypass_norm(self, module, args, output):
        if getattr(self._kept, "bypass", False):
            self._kept.bypass = False
            return args[0]
        return None


def _residual_site(state, key, target) -> Site:
    layer_id, location = key
    spec = state.interface.residual_sites.get(location)
    if spec is None:
        raise AdapterError(
            f"{type(state.model).__name__} has no {location!r} site in its interface; "
            f"available: {', '.join(state.interface.residual_sites)}{state.interface.why_missing(location)}"
        )
    spec = site_in(state.layers[layer_id], spec)  # (per-stack specs: this layer's)
    if spec is None:
        raise AdapterError(f"layer {layer_id} of {type(state.model).__name__} has none of the {location} sites "
                           f"{state.interface.residual_sites[location]}")
    try:
        site_cls = _RESIDUAL_KINDS[spec.kind]
    except KeyError:
        raise AdapterError(f"unknown residual site kind {spec.kind!r}; registered: "
                           f"{', '.join(sorted(_RESIDUAL_KINDS))}") from None
    return site_cls(state, key, state.layers[layer_id], spec)


register_site_kind("residual", _residual_site)
register_residual_kind("post_ln", PostLNSite)
register_residual_kind("sublayer", SublayerHookSite)
