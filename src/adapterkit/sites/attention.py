"""The attention site: extra keys and values (prefix tuning) in an attention module, through transformers'
attention-function registry (attention.py)."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from ..attention import SITE_ATTR
from ..compose import attention as compose_attention
from ..errors import AdapterError
from .base import Site


def _shifted_bias(compute, site: "AttentionSite", query_length, key_length, *args, **kwargs):
    """The module's position bias over `key_length` + the active shift: real keys sit that much further on (the
    prefix keys take the first positions), as the `adapters` package computes T5 prefix tuning."""
    return compute(query_length, key_length + site.position_shift(), *args, **kwargs)


class AttentionSite(Site):
    """Marks an attention module (self- or cross-attention) for the `adapterkit_<impl>` attention wrapper (see
    attention.py).

    `extend` prepends the active entries' keys/values (Stack: the last adapter's outermost) and widens the mask;
    a forward pre-hook keeps the attention input for gates. What an adapter runs here is its method's
    `site_entry` (prefix tuning: the prefix of this attention kind and the layer's gate; compose/attention.py has
    the protocol).
    """

    def __init__(self, state, key, module: nn.Module):
        super().__init__(state, key)
        self.module = module
        self._input = None
        self._handle = None

    def in_use(self, names: list[str]) -> bool:
        return bool(self.collect(names))

    def install(self) -> None:
        self.module.__dict__[SITE_ATTR] = self
        self._handle = self.module.register_forward_pre_hook(self._keep_input, with_kwargs=True)
        self.state.use_prefix_attention(True)
        bias = self.state.interface.position_bias
        if bias and hasattr(type(self.module), bias):  # T5: the relative position bias, shifted by `shift_positions`
            compute = getattr(type(self.module), bias).__get__(self.module)  # the class's, never a wrapper of ours
            self.module.__dict__[bias] = functools.partial(_shifted_bias, compute, self)

    def remove(self) -> None:
        self.module.__dict__.pop(SITE_ATTR, None)
        if self.state.interface.position_bias:
            self.module.__dict__.pop(self.state.interface.position_bias, None)
        if self._handle is not None:
            self._handle.remove()
        self._input = None
        if not any(isinstance(s, AttentionSite) and s is not self for s in self.state.sites.values()):
            self.state.use_prefix_attention(False)

    def _keep_input(self, module, args, kwargs):
        self._input = args[0] if args else kwargs.get("hidden_states")

    def position_shift(self) -> int:
        """How far the active prefix adapter with `shift_positions` moves the real keys here (its prefix_length; 0
        without one). Only a single such adapter is supported: the package's behaviour for several is unchecked."""
        setup = self.state.current_setup()
        names = [] if setup is None or self.state.skipped(self.key[0]) else setup.flatten()
        shifted = [ref for ref in self.collect(names) if ref.prefix.shift_positions]
        if not shifted:
            return 0
        if len(names) > 1 or self.state.record.routing is not None:
            raise AdapterError(
                f"prefix tuning with shift_positions=True (the `adapters` package's T5 semantics) runs as the only "
                f"active adapter; active: {setup!r}{' with per-example routing' if self.state.record.routing else ''}")
        return shifted[0].prefix.prefix_length

    def extend(self, module, query, key, value, mask):
        # the attention input is for this call's gates only: let it go now, not at the next forward (it would keep
        # one activation per layer, and the last step's graph behind it, alive between steps)
        gate_input, self._input = self._input, None
        refs = self.state.active_at(self.key)
        if not refs:
            return key, value, mask
        if type(refs) is not tuple:  # a composition block or per-example routing
            return compose_attention.extend(self, refs, module, query, key, value, mask, gate_input)
        pk, pv = compose_attention.stacked(refs, self.key[0], key.shape[0], key, value, gate_input)
        mask = compose_attention.extend_mask(mask, pk.shape[2], query.shape[2], key.shape[2], query, module)
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2), mask
