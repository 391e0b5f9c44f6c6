"""Attach points: where the model's own forward calls into the active adapters.

A site is installed once per (layer, location) the first time an adapter needs it and removed when the last
adapter there is deleted. At call time it asks the state for the modules the active setup wants there
(a cached tuple), so an inactive or merged adapter costs one dict lookup.

Site kinds form a small registry (`register_site_kind`): a method asks for a kind by name ("linear", "residual",
"invertible"); "residual" dispatches once more on the interface's site spec (`ResidualSite` -> a post-LN output
module, `SublayerSite` -> hooks around a sublayer). Adding an architecture never adds a branch here.
"""

from __future__ import annotations

import functools

import threading
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from .compose import bottleneck as compose_bottleneck, invertible as compose_invertible
from .compose import lora as compose_lora, prefix as compose_prefix
from .errors import AdapterError
from .methods.lora import IA3Input, LoRA
from .methods.lora_fused import fused_lora
from .interfaces.base import resolve
from .utils import get_submodule

if TYPE_CHECKING:  # pragma: no cover
    from .interfaces.base import ResidualSite as ResidualSpec, SublayerSite as SublayerSpec
    from .projection import Projection
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

    def in_use(self, names: list[str]) -> bool:
        """Whether any of these adapters has something at this site (else the site is removed)."""
        return any(self.state.module_at(name, self.key) is not None for name in names)

    def accept(self, module: nn.Module) -> None:
        """Raise a clear error if `module` cannot run at this site (checked when an adapter is added)."""

    def install(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


_SITE_KINDS: dict[str, Callable[..., Site]] = {}
_RESIDUAL_KINDS: dict[str, type] = {}


def register_site_kind(kind: str, factory: Callable[..., Site]) -> None:
    """`factory(state, key, target) -> Site` builds the site a method asks for as `site=kind`."""
    _SITE_KINDS[kind] = factory


def register_residual_kind(kind: str, site_cls: type) -> None:
    """`site_cls(state, key, layer, spec)` serves interface residual specs whose `kind` is `kind`."""
    _RESIDUAL_KINDS[kind] = site_cls


def make_site(state: "AdapterState", key: tuple, kind: str, target: Any) -> Site:
    try:
        factory = _SITE_KINDS[kind]
    except KeyError:
        raise AdapterError(f"unknown site kind {kind!r}; registered: {', '.join(sorted(_SITE_KINDS))}") from None
    return factory(state, key, target)


class LinearSite(Site):
    """LoRA adds to, (IA)^3 scales, a projection's output (or its slice of a fused output).

    A whole projection's `forward` is taken over (an instance attribute, a bound method of the site, so
    `copy.deepcopy(model)` keeps working): one frozen nn.Linear / Conv1D with exactly one plain LoRA active runs
    as a single fused autograd node (methods/lora_fused.py); anything else runs the module's own forward and then
    the composition. A fused projection's slice keeps a forward hook (several sites share the module). Either
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
        return self.target.apply(output, lambda out: compose_lora.run(modules, args[0], out))

    def _forward(self, *args, **kwargs):
        module = self.target.module
        modules = () if self._bypass else self.state.active_at(self.key)
        x = args[0] if args else next(iter(kwargs.values()), None)
        if self._whole and type(modules) is tuple and len(modules) == 1 and self._inner is None:
            if type(modules[0]) is IA3Input and len(args) == 1 and not kwargs:  # the projection of the scaled input
                return type(module).forward(module, x * modules[0].vector().to(x.dtype))
            fused = _fused_args(modules[0], module, x)
            if fused is not None:
                return fused_lora(x, *fused, self.target.transposed)
        if self._inner is not None:
            out = self._inner(*args, **kwargs)
        else:
            out = type(module).forward(module, *args, **kwargs)
        if not modules:
            return out
        return compose_lora.run(modules, x, out)


_FUSABLE = (nn.Linear, Conv1D)
# device types on which a LoRA site that records a graph runs as the fused autograd node (methods/lora_fused.py)
FUSED_TRAINING_DEVICES = ("cpu",)


def _fused_args(lora, module: nn.Module, x) -> tuple | None:
    """(weight, bias, A, B, scaling) if `lora` at `module` can run fused: one plain LoRA (no gate, no active
    dropout, no hooks of its own) on a frozen projection (or without grad mode), all of one dtype, no autocast, not
    while torch.compile traces, and where a graph is recorded only on FUSED_TRAINING_DEVICES; else None.

    Parameters are read from the modules' dicts: nn.Module.__getattr__ would cost more than the rest of the check.
    """
    if torch.compiler.is_compiling():
        return None  # the compiler gets the plain ops and fuses them as it sees fit
    # the exact module types whose forward it reproduces (not subclasses: quantised, parametrized, ...)
    if type(module) not in _FUSABLE or type(lora) is not LoRA or lora.gate is not None:
        return None
    if lora._forward_pre_hooks or lora._forward_hooks or lora._backward_hooks or lora._backward_pre_hooks:
        return None  # hooks on the LoRA module itself: it has to be called
    dropout = lora._modules["dropout"]
    if type(dropout) is not nn.Identity and dropout.training and dropout.p > 0:
        return None
    params = module._parameters
    weight, bias = params["weight"], params.get("bias")
    lora_params = lora._parameters
    a, b = lora_params.get("lora_A"), lora_params.get("lora_B")
    if a is None or b is None or not isinstance(x, torch.Tensor):
        return None
    if torch.is_grad_enabled():  # (no graph is recorded under no_grad / inference_mode)
        if weight.requires_grad or (bias is not None and bias.requires_grad):
            return None  # trainable base weights
        if x.device.type not in FUSED_TRAINING_DEVICES and (x.requires_grad or a.requires_grad or b.requires_grad):
            return None  # the autograd node pays off on the CPU only (methods/lora_fused.py, "Where it runs")
    if (x.dtype != weight.dtype or a.dtype != weight.dtype or b.dtype != weight.dtype
            or torch.is_autocast_enabled(x.device.type)):
        return None
    return weight, bias, a, b, lora.scaling


class ResidualSite(Site):
    """Takes over `forward` of a post-LN output module: `LN(dropout(dense(h)) + x)` with adapters before the LN.

    The interface names the module's dense / dropout / layer norm; nothing else of the model's code is repeated.
    """

    def __init__(self, state, key, layer: nn.Module, spec: "ResidualSpec"):
        super().__init__(state, key)
        self.module = get_submodule(layer, spec.module)
        self.dense = get_submodule(self.module, spec.dense)
        self.dropout = get_submodule(self.module, spec.dropout) if spec.dropout else nn.Identity()
        self.layer_norm = get_submodule(self.module, spec.layer_norm) if spec.layer_norm else None

    def install(self) -> None:
        # An instance attribute shadows the class's forward; nn.Module.__call__ picks it up.
        self.module.forward = self

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)

    def __call__(self, hidden_states, input_tensor, *args, **kwargs):
        h = self.dropout(self.dense(hidden_states))
        return compose_bottleneck.run(self.state.active_at(self.key), h, input_tensor, self.layer_norm)


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

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle of the model: the per-thread slot is not state
        return {k: v for k, v in self.__dict__.items() if k != "_kept"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._kept = threading.local()

    def accept(self, module: nn.Module) -> None:
        config = getattr(module, "config", None)
        if self.layer_norm is not None and config is not None and not getattr(config, "original_ln_after", True):
            raise AdapterError(
                f"original_ln_after=False cannot run at {self.key[1]} of layer {self.key[0]}: this layer applies its "
                "own norm to the sublayer output plus the residual; use original_ln_after=True here"
            )

    def install(self) -> None:
        self._handles = [self.residual.register_forward_pre_hook(self._keep, with_kwargs=True),
                         self.output.register_forward_hook(self._replace)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
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
        new = compose_bottleneck.run(modules, h, x, self.layer_norm, layer_adds_residual=True)
        return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new


class InvertibleSite(Site):
    """NICE adapter of the first active adapter: forward on the embeddings, inverse before LM heads.

    `tap="output"` transforms the embeddings module's output, `"input"` its first input (T5: the encoder's
    first block, after the embedding dropout, as the anchors do).
    """

    def __init__(self, state, key, embeddings: nn.Module, lm_heads: list[nn.Module], tap: str = "output"):
        super().__init__(state, key)
        self.embeddings = embeddings
        self.lm_heads = lm_heads
        self.tap = tap
        self._handles: list = []

    def collect(self, names: list[str]) -> tuple:
        # As the anchors: only the first adapter of the setup contributes its invertible adapter.
        return super().collect(names[:1])

    def install(self) -> None:
        if self.tap == "input":
            self._handles = [self.embeddings.register_forward_pre_hook(self._forward_input, with_kwargs=True)]
        else:
            self._handles = [self.embeddings.register_forward_hook(self._forward)]
        self._handles += [head.register_forward_pre_hook(self._inverse) for head in self.lm_heads]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward(self, module, args, output):
        modules = self.state.active_at(self.key)
        return compose_invertible.apply(modules, output, rev=False) if modules else None

    def _forward_input(self, module, args, kwargs):
        modules = self.state.active_at(self.key)
        if not modules:
            return None
        if args:
            return (modules[0](args[0]),) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs, hidden_states=modules[0](kwargs["hidden_states"]))
        return args, kwargs

    def _inverse(self, module, args):
        modules = self.state.active_at(self.key)
        if not modules:
            return None
        return (compose_invertible.apply(modules, args[0], rev=True),) + tuple(args[1:])


class PrefixRef:
    """One active prefix at one layer: its module, and the layer's gate (or None)."""

    __slots__ = ("prefix", "gate")

    def __init__(self, prefix, gate):
        self.prefix, self.gate = prefix, gate


def _shifted_bias(compute, site: "PrefixSite", query_length, key_length, *args, **kwargs):
    """The module's position bias over `key_length` + the active shift: real keys sit that much further on (the
    prefix keys take the first positions), as the `adapters` package computes T5 prefix tuning."""
    return compute(query_length, key_length + site.position_shift(), *args, **kwargs)


class PrefixSite(Site):
    """Marks an attention module (self- or cross-attention) for the `adapterkit_<impl>` attention wrapper (see
    attention.py).

    `extend` prepends the active prefixes' keys/values (Stack: the last adapter's outermost) and widens the mask;
    a forward pre-hook keeps the attention input for prefix gates. Which prefix module of an adapter serves it
    depends on the attention kind (methods/prefix_tuning.py: GROUPS).
    """

    def __init__(self, state, key, module: nn.Module):
        super().__init__(state, key)
        from .methods.prefix_tuning import GROUPS, group_of
        self.module = module
        self.prefix_key, _, self.gate_location = GROUPS[group_of(state, key[0], key[1])]
        self._input = None
        self._handle = None

    def in_use(self, names: list[str]) -> bool:
        return bool(self.collect(names))

    def collect(self, names: list[str]) -> tuple:
        layer_id = self.key[0]
        refs = []
        for name in names:
            prefix = self.state.module_at(name, ("model", self.prefix_key))
            if prefix is not None and layer_id in prefix.layer_index:
                refs.append(PrefixRef(prefix, self.state.module_at(name, (layer_id, self.gate_location))))
        return tuple(refs)

    def install(self) -> None:
        from .attention import SITE_ATTR
        self.module.__dict__[SITE_ATTR] = self
        self._handle = self.module.register_forward_pre_hook(self._keep_input, with_kwargs=True)
        self.state.use_prefix_attention(True)
        bias = self.state.interface.position_bias
        if bias and hasattr(type(self.module), bias):  # T5: the relative position bias, shifted by `shift_positions`
            compute = getattr(type(self.module), bias).__get__(self.module)  # the class's, never a wrapper of ours
            self.module.__dict__[bias] = functools.partial(_shifted_bias, compute, self)

    def remove(self) -> None:
        from .attention import SITE_ATTR
        self.module.__dict__.pop(SITE_ATTR, None)
        if self.state.interface.position_bias:
            self.module.__dict__.pop(self.state.interface.position_bias, None)
        if self._handle is not None:
            self._handle.remove()
        self._input = None
        if not any(isinstance(s, PrefixSite) and s is not self for s in self.state.sites.values()):
            self.state.use_prefix_attention(False)

    def _keep_input(self, module, args, kwargs):
        self._input = args[0] if args else kwargs.get("hidden_states")

    def position_shift(self) -> int:
        """How far the active prefix adapter with `shift_positions` moves the real keys here (its prefix_length; 0
        without one). Only a single such adapter is supported: the package's behaviour for several is unchecked."""
        setup = self.state.current_setup()
        names = [] if setup is None else setup.flatten()
        shifted = [ref for ref in self.collect(names) if ref.prefix.shift_positions]
        if not shifted:
            return 0
        if len(names) > 1 or self.state.routing is not None:
            raise AdapterError(
                f"prefix tuning with shift_positions=True (the `adapters` package's T5 semantics) runs as the only "
                f"active adapter; active: {setup!r}{' with per-example routing' if self.state.routing else ''}")
        return shifted[0].prefix.prefix_length

    def extend(self, module, query, key, value, mask):
        # the attention input is for this call's gates only: let it go now, not at the next forward (it would keep
        # one activation per layer, and the last step's graph behind it, alive between steps)
        gate_input, self._input = self._input, None
        refs = self.state.active_at(self.key)
        if not refs:
            return key, value, mask
        if type(refs) is not tuple:  # a composition block or per-example routing
            return compose_prefix.extend(self, refs, module, query, key, value, mask, gate_input)
        pk, pv = compose_prefix.stacked(refs, self.key[0], key.shape[0], key, value, gate_input)
        mask = compose_prefix.extend_mask(mask, pk.shape[2], query.shape[2], key.shape[2], query, module)
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2), mask


def _residual_site(state, key, target) -> Site:
    layer_id, location = key
    spec = state.interface.residual_sites.get(location)
    if spec is None:
        raise AdapterError(
            f"{type(state.model).__name__} has no {location!r} site in its interface; "
            f"available: {', '.join(state.interface.residual_sites)}"
        )
    try:
        site_cls = _RESIDUAL_KINDS[spec.kind]
    except KeyError:
        raise AdapterError(f"unknown residual site kind {spec.kind!r}; registered: "
                           f"{', '.join(sorted(_RESIDUAL_KINDS))}") from None
    return site_cls(state, key, state.layers[layer_id], spec)


def _invertible_site(state, key, target) -> Site:
    interface = state.interface
    heads = [getattr(state.model, h) for h in interface.lm_heads if isinstance(getattr(state.model, h, None),
                                                                              nn.Module)]
    return InvertibleSite(state, key, state.embeddings_module(), heads, interface.embeddings_tap)


register_site_kind("linear", LinearSite)
register_site_kind("residual", _residual_site)
register_site_kind("invertible", _invertible_site)
register_residual_kind("post_ln", ResidualSite)
register_residual_kind("sublayer", SublayerHookSite)


def _prefix_site(state, key, target) -> Site:
    field = "cross_attention" if key[1] == "cross_prefix" else "self_attention"
    path = getattr(state.interface, field)
    module = resolve(state.layers[key[0]], path) if path else None
    if module is None or not state.interface.attention_registry:
        raise AdapterError(
            f"prefix tuning cannot attach to layer {key[0]} of {type(state.model).__name__}: "
            + (f"its interface names no {field} module there" if module is None else
               "its attention does not go through transformers' attention-function registry")
        )
    return PrefixSite(state, key, module)


register_site_kind("prefix", _prefix_site)  # self-attention
register_site_kind("cross_prefix", _prefix_site)  # the decoder's cross-attention
