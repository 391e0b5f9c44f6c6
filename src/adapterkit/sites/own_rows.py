"""The "rows" own-attention kind: prefix tuning in an attention module that computes plain softmax attention
itself, its prefix keys / values entering the call as extra rows (interfaces/prefix_rows.py has the mechanics and
the check that decides which modules get this kind)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import AdapterError
from ..interfaces import prefix_rows as pr
from ..interfaces.base import OwnAttention, resolve
from .attention import AttentionSite
from .own_attention import register_own_attention_kind


def _heads(config, interface) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) the prefix is built with."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    if interface.attention_shape:
        kv, head_dim = interface.attention_shape
    else:
        kv = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads or kv, kv, head_dim


class RowsPrefixSite(AttentionSite):
    def __init__(self, state, key, module: nn.Module, spec: OwnAttention):
        super().__init__(state, key, module)
        self.spec = spec
        self.names = pr.signature_names(module)
        self._handles: list = []
        self._n = self._len = 0
        self._rows: tuple | None = None
        self._cache: pr.CacheRows | None = None

    def _projection(self, path: str) -> nn.Module:
        found = resolve(self.module, path)
        if found is None:
            raise AdapterError(f"prefix tuning: {type(self.module).__name__} has no {path!r} (its interface's "
                               "own_attention names it)")
        return found

    def install(self) -> None:
        if self._handles:
            return
        self._handles.append(self.module.register_forward_pre_hook(self._begin, with_kwargs=True))
        if self.spec.slices:
            hooks = [(self.spec.key, lambda m, a, out: self._place(out, [(0, self.spec.slices[0]),
                                                                         (1, self.spec.slices[1])]))]
        else:
            hooks = [(self.spec.key, lambda m, a, out: self._place(out, [(0, None)])),
                     (self.spec.value, lambda m, a, out: self._place(out, [(1, None)]))]
        for path, hook in hooks:
            self._handles.append(self._projection(path).register_forward_hook(hook))
        self._handles.append(self.module.register_forward_hook(self._end))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._n, self._rows, self._cache = 0, None, None

    def _begin(self, module, args, kwargs):
        self._n, self._rows = 0, None
        if not self.state.active_at(self.key):
            return None
        self._cache = pr.CacheRows(module, self.names, args, kwargs)
        hidden = pr.get_arg(self.names, args, kwargs, self.spec.hidden)
        heads, kv, head_dim = _heads(self.state.model.config, self.state.interface)
        batch, length = hidden.shape[:2]
        query = hidden.new_empty(batch, heads, length, 0)
        empty = hidden.new_empty(batch, kv, 0, head_dim)
        keys, values, mask = self.extend(module, query, empty, empty,
                                         torch.ones(batch, 1, 1, 0, dtype=torch.bool, device=hidden.device))
        if keys.shape[2] == 0:
            return None
        visible = None if mask is None else mask.reshape(batch, -1, keys.shape[2])[:, 0]
        args, kwargs, self._len = pr.widen_call(self.spec, self.names, args, kwargs, keys.shape[2], visible,
                                                     self._cache.past)
        self._n, self._rows, self._kv = keys.shape[2], (pr.flat_rows(keys), pr.flat_rows(values)), kv
        return args, kwargs

    def _place(self, output, parts):
        if not self._n:
            return None
        return pr.place_rows(output, self._n, self._len, [(self._rows[i], part) for i, part in parts], self._kv)

    def _end(self, module, args, output):
        n, self._n, self._rows = self._n, 0, None
        if not n:
            return None
        self._cache.trim(n, self._len)
        return pr.drop_rows(output, n, self._len)


register_own_attention_kind("rows", RowsPrefixSite)
