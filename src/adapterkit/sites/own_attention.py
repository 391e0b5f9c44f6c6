"""Prefix tuning in attention modules that compute their scores themselves (DeBERTa's disentangled attention),
where the attention-function registry (attention.py) never sees the keys.

The module's own code stays untouched; four hooks reproduce what the `adapters` package edits into it:
- a forward pre-hook asks the site for this call's prefix keys / values and widened mask (`AttentionSite.extend`
  with zero-length real keys, so composition, per-row routing and gates work as everywhere) and passes the mask on;
- forward hooks on the key / value projection(s) prepend the prefix rows to their outputs (they run after the
  projections' own adapters: LoRA on `value_proj` changes the real values only);
- the module's relative-position bias method is wrapped (an instance attribute, as T5's `compute_bias` is) to see
  the real keys only and give zero bias over the prefix;
- a forward hook ends the call (and, for a fused q/k/v projection, drops the prefix rows' outputs again).

Kinds register by name (`OwnAttention.kind`); an architecture declares its kind, never a branch here.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import AdapterError
from ..interfaces.base import OwnAttention, resolve
from .attention import AttentionSite

_KINDS: dict[str, type] = {}


def register_own_attention_kind(kind: str, site_cls: type) -> None:
    """`site_cls(state, key, module, spec)` serves `OwnAttention(kind=kind, ...)`."""
    _KINDS[kind] = site_cls


def own_attention_site(state, key, module: nn.Module, spec: OwnAttention) -> AttentionSite:
    try:
        return _KINDS[spec.kind](state, key, module, spec)
    except KeyError:
        raise AdapterError(f"unknown own-attention kind {spec.kind!r}; registered: {', '.join(sorted(_KINDS))}") \
            from None


def _call_args(args, kwargs, name: str, index: int):
    return args[index] if len(args) > index else kwargs.get(name)


class _OwnAttentionSite(AttentionSite):
    """The common part: the pre-hook computing this call's prefix, the bias wrapper, the end-of-call hook."""

    # whether the relative-position bias method sees extra (discarded) query rows too
    query_rows = False

    def __init__(self, state, key, module: nn.Module, spec: OwnAttention):
        super().__init__(state, key, module)
        self.spec = spec
        self._handles: list = []
        self._n_prefix = 0
        self._prefix: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, heads, P, head_dim) keys, values

    def _projection(self, path: str) -> nn.Module:
        found = resolve(self.module, path)
        if found is None:
            raise AdapterError(f"prefix tuning: {type(self.module).__name__} has no {path!r} (its interface's "
                               "own_attention names it)")
        return found

    def _kv_modules(self) -> list[tuple[nn.Module, Callable]]:
        raise NotImplementedError

    def install(self) -> None:
        if self._handles:
            return
        self._handles.append(self.module.register_forward_pre_hook(self._begin, with_kwargs=True))
        for projection, hook in self._kv_modules():
            self._handles.append(projection.register_forward_hook(hook))
        self._handles.append(self.module.register_forward_hook(self._end))
        if self.spec.bias_method:
            original = getattr(type(self.module), self.spec.bias_method).__get__(self.module)  # the class's own
            self.module.__dict__[self.spec.bias_method] = functools.partial(self._real_keys_bias, original)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.spec.bias_method:
            self.module.__dict__.pop(self.spec.bias_method, None)
        self._n_prefix, self._prefix, self._input = 0, None, None

    def _begin(self, module, args, kwargs):
        hidden = _call_args(args, kwargs, "hidden_states", 0)
        mask = _call_args(args, kwargs, "attention_mask", 1)
        self._n_prefix, self._prefix = 0, None
        if not self.state.active_at(self.key):
            return None
        if mask is None:
            raise AdapterError(f"prefix tuning in {type(module).__name__} needs the attention mask its model passes")
        if _call_args(args, kwargs, "query_states", 3) is not None:
            self._check_query_states()
        self._input = hidden
        heads = self.state.model.config.num_attention_heads
        head_dim = self.state.model.config.hidden_size // heads
        batch, length = hidden.shape[:2]
        query = hidden.new_empty(batch, heads, length, 0)
        empty = hidden.new_empty(batch, heads, 0, head_dim)
        keys, values, mask = self.extend(module, query, empty, empty, mask.bool())
        if keys.shape[2] == 0:
            return None
        self._n_prefix, self._prefix = keys.shape[2], (keys, values)
        mask = self._widen_rows(mask)
        if len(args) > 1:
            args = (*args[:1], mask, *args[2:])
        else:
            kwargs = {**kwargs, "attention_mask": mask}
        return args, kwargs

    def _check_query_states(self) -> None:
        """Separate query states (DeBERTa's enhanced mask decoder) are fine where keys come from their own
        projection; a fused one raises."""

    def _widen_rows(self, mask: torch.Tensor) -> torch.Tensor:
        return mask

    def _real_keys_bias(self, original, query_layer, key_layer, *args, **kwargs):
        p = self._n_prefix
        if not p:
            return original(query_layer, key_layer, *args, **kwargs)
        if self.query_rows:
            query_layer = query_layer[..., p:, :]
        bias = original(query_layer, key_layer[..., p:, :], *args, **kwargs)
        if not isinstance(bias, torch.Tensor):
            return bias
        return F.pad(bias, (p, 0, p, 0) if self.query_rows else (p, 0))

    def _end(self, module, args, output):
        self._n_prefix, self._prefix = 0, None
        return None


class SeparatePrefixSite(_OwnAttentionSite):
    """Key and value projections of their own (DeBERTa-v2): their outputs get the prefix rows first."""

    def _kv_modules(self):
        return [(self._projection(self.spec.key), functools.partial(self._prepend, 0)),
                (self._projection(self.spec.value), functools.partial(self._prepend, 1))]

    def _prepend(self, which: int, module, args, output):
        if not self._n_prefix:
            return None
        rows = self._prefix[which]  # (B, heads, P, head_dim) -> (B, P, heads * head_dim), the heads' layout
        rows = rows.permute(0, 2, 1, 3).reshape(rows.shape[0], rows.shape[2], -1).to(output.dtype)
        return torch.cat([rows, output], dim=1)


class FusedPerHeadPrefixSite(_OwnAttentionSite):
    """One q/k/v projection split per head into [q k v] (DeBERTa): its output gets P rows first, holding zero
    queries and the prefix keys and values; the module then computes P extra query rows, which the end hook drops
    (every real row's result is what it would be with the prefix in the keys alone)."""

    query_rows = True

    def _kv_modules(self):
        return [(self._projection(self.spec.key), self._prepend)]

    def _check_query_states(self) -> None:
        raise AdapterError(f"prefix tuning in {type(self.module).__name__} does not support separate query_states "
                           "(its fused projection does not compute the keys then)")

    def _widen_rows(self, mask):
        # the extra query rows see everything (their outputs are dropped); the real rows keep their mask
        return torch.cat([mask.new_ones(*mask.shape[:-2], self._n_prefix, mask.shape[-1]), mask], dim=-2)

    def _prepend(self, module, args, output):
        if not self._n_prefix:
            return None
        keys, values = self._prefix
        if self.spec.value_bias:
            bias = getattr(self.module, self.spec.value_bias)
            values = values - bias.view(1, values.shape[1], 1, -1).to(values.dtype)
        rows = torch.cat([torch.zeros_like(keys), keys, values], dim=-1)  # (B, heads, P, 3 * head_dim)
        rows = rows.permute(0, 2, 1, 3).reshape(rows.shape[0], rows.shape[2], -1).to(output.dtype)
        return torch.cat([rows, output], dim=1)

    def _end(self, module, args, output):
        p = self._n_prefix
        super()._end(module, args, output)
        if not p:
            return None
        context, *rest = output
        rest = [r[..., p:, :] if isinstance(r, torch.Tensor) else r for r in rest]  # attention probs: real rows
        return (context[:, p:], *rest)


register_own_attention_kind("separate", SeparatePrefixSite)
register_own_attention_kind("fused_per_head", FusedPerHeadPrefixSite)
