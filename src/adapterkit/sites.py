"""Attach points: where the model's own forward calls into the active adapters.

A site is installed once per (layer, location) the first time an adapter needs it and removed when the last
adapter there is deleted. At call time it asks the state for the modules the active setup wants there
(a cached tuple), so an inactive or merged adapter costs one dict lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .compose import bottleneck as compose_bottleneck, invertible as compose_invertible
from .compose import lora as compose_lora, prefix as compose_prefix
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

    def in_use(self, names: list[str]) -> bool:
        """Whether any of these adapters has something at this site (else the site is removed)."""
        return any(self.state.module_at(name, self.key) is not None for name in names)

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
        return compose_lora.run(modules, args[0], output)


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
        return compose_bottleneck.run(self.state.active_at(self.key), h, input_tensor, self.layer_norm)


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
        return compose_invertible.apply(modules, output, rev=False) if modules else None

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


class PrefixSite(Site):
    """Marks a self-attention module for the `adapterkit_<impl>` attention wrapper (see attention.py).

    `extend` prepends the active prefixes' keys/values (Stack: the last adapter's outermost) and widens the mask;
    a forward pre-hook keeps the attention input for prefix gates.
    """

    def __init__(self, state, key, module: nn.Module):
        super().__init__(state, key)
        self.module = module
        self._input = None
        self._handle = None

    def in_use(self, names: list[str]) -> bool:
        return bool(self.collect(names))

    def collect(self, names: list[str]) -> tuple:
        layer_id = self.key[0]
        refs = []
        for name in names:
            prefix = self.state.module_at(name, ("model", "prefix"))
            if prefix is not None and layer_id in prefix.layer_index:
                refs.append(PrefixRef(prefix, self.state.module_at(name, (layer_id, "prefix_gate"))))
        return tuple(refs)

    def install(self) -> None:
        from .attention import SITE_ATTR
        self.module.__dict__[SITE_ATTR] = self
        self._handle = self.module.register_forward_pre_hook(self._keep_input, with_kwargs=True)
        self.state.use_prefix_attention(True)

    def remove(self) -> None:
        from .attention import SITE_ATTR
        self.module.__dict__.pop(SITE_ATTR, None)
        if self._handle is not None:
            self._handle.remove()
        self._input = None
        if not any(isinstance(s, PrefixSite) and s is not self for s in self.state.sites.values()):
            self.state.use_prefix_attention(False)

    def _keep_input(self, module, args, kwargs):
        self._input = args[0] if args else kwargs.get("hidden_states")

    def extend(self, module, query, key, value, mask):
        refs = self.state.active_at(self.key)
        if not refs:
            return key, value, mask
        if type(refs) is not tuple:  # a composition block or per-example routing
            return compose_prefix.extend(self, refs, module, query, key, value, mask)
        batch, q_len, k_len = key.shape[0], query.shape[2], key.shape[2]
        for ref in refs:
            pk, pv = ref.prefix.key_values(self.key[0])
            pk = pk.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
            pv = pv.to(value.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
            if ref.gate is not None:
                gate = ref.gate(self._input).to(key.dtype)  # (batch, 1 or 2): keys, values
                pk = pk * gate[:, 0].view(batch, 1, 1, 1)
                pv = pv * gate[:, -1].view(batch, 1, 1, 1)
            key = torch.cat([pk, key], dim=2)
            value = torch.cat([pv, value], dim=2)
        mask = _extend_mask(mask, key.shape[2] - k_len, q_len, k_len, query, module)
        return key, value, mask


def _extend_mask(mask, n_prefix: int, q_len: int, k_len: int, query, module):
    """Prefix positions are visible to every query; the rest of the mask is unchanged."""
    if mask is None:
        if not getattr(module, "is_causal", False) or q_len == 1:
            return None
        # the implementation would have used is_causal=True, which a longer key breaks: build the mask
        i = torch.arange(q_len, device=query.device)[:, None]
        j = torch.arange(k_len, device=query.device)[None, :]
        causal = j <= i + (k_len - q_len)
        return torch.cat([causal.new_ones(q_len, n_prefix), causal], dim=-1)[None, None]
    if mask.dtype == torch.bool:
        prefix = mask.new_ones(*mask.shape[:-1], n_prefix)
    else:
        prefix = mask.new_zeros(*mask.shape[:-1], n_prefix)
    return torch.cat([prefix, mask], dim=-1)
