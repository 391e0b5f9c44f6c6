"""Prefix keys / values as extra rows of an attention call ("rows" own-attention kind), for attention modules that
compute their scores themselves with plain projections and a softmax (BERT-style eager attention, Bloom, MPNet...).

The module's own code stays untouched. For one call with P prefix positions and L real rows:
- its input rows (the hidden states, and any argument shaped like them, e.g. Bloom's residual) get P zero rows
  in front, so every view the module makes with the query length still fits;
- the key and value projections' outputs get their first P rows replaced by the prefix keys / values;
- the mask gets P visible key columns in front (and P fully visible query rows where it has a row axis); additive
  biases over keys (MPNet's relative position bias, Bloom's alibi) get zeros there: the prefix has no position;
- the P extra query rows are dropped from the output again.
Continuing from a dynamic KV cache of C positions (generate()), the keys the module sees are [cache; prefix; new]:
the prefix columns go in at C in the mask and biases, and after the call the prefix rows are cut out of the cache
again (`CacheRows`), so the cache holds real positions only and the model's position and mask arithmetic holds.
Softmax attention does not depend on the order of its keys, which is what the check below establishes.
Every real row then attends [prefix; real keys] with its own mask: prefix tuning as the `adapters` package defines
it. Which modules this is right for is decided by a check on the module itself (`check_rows`, used by the
automatic interface): a module where it does not hold is refused, never hooked on a guess.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import AdapterError

MASK_NAMES = ("attention_mask", "attn_mask", "mask")


def signature_names(module) -> list[str]:
    """The names of the module's forward parameters, in order (without self)."""
    params = inspect.signature(type(module).forward).parameters
    return [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                                           p.KEYWORD_ONLY)]


def get_arg(names, args, kwargs, name: str) -> Any:
    i = names.index(name) if name in names else -1
    if 0 <= i < len(args):
        return args[i]
    return kwargs.get(name)


def set_arg(names, args, kwargs, name: str, value) -> tuple[tuple, dict]:
    i = names.index(name) if name in names else -1
    if 0 <= i < len(args):
        return (*args[:i], value, *args[i + 1:]), kwargs
    return args, {**kwargs, name: value}


def _insert(t: torch.Tensor, cols: torch.Tensor, at: int) -> torch.Tensor:
    """`t` with `cols` put in along the last axis before column `at`."""
    return torch.cat([t[..., :at], cols, t[..., at:]], dim=-1) if at else torch.cat([cols, t], dim=-1)


def widen_mask(mask, length: int, n_prefix: int, visible: torch.Tensor | None, seen=None, past: int = 0):
    """`mask` (boolean, additive or 0/1 multiplicative; `seen`: its value where a key is seen, None: True for a
    boolean mask, its largest entry for another) with `n_prefix` key columns put in after the `past` cached keys,
    visible where `visible` ((batch, n_prefix) bool; None: everywhere), and fully visible extra rows."""
    if mask is None:
        if visible is not None and not bool(visible.all()):
            raise AdapterError("prefix tuning with per-row prefixes needs an attention mask in this attention "
                               "module, and its model passes none")
        return None
    if mask.shape[-1] != past + length:
        raise AdapterError(f"prefix tuning: the attention mask covers {mask.shape[-1]} keys, not the {length} rows "
                           f"of the attention input (+{past} cached): keys from another sequence are not supported "
                           "here")
    if mask.dtype == torch.bool:
        attend = True if seen is None else bool(seen)
        hide = not attend
    else:
        attend = float(seen) if seen is not None else float(mask.max()) if mask.numel() else 0.0
        hide = torch.finfo(mask.dtype).min if attend <= 0 else 0.0
    shape = (*mask.shape[:-1], n_prefix)
    if visible is None:
        cols = mask.new_full(shape, attend)
    else:
        batch = visible.shape[0]
        if mask.shape[0] != batch:
            mask = mask.expand(batch, *mask.shape[1:])
            shape = (*mask.shape[:-1], n_prefix)
        vis = visible.view(batch, *([1] * (mask.dim() - 2)), n_prefix).expand(shape)
        cols = torch.where(vis, mask.new_full(shape, attend), mask.new_full(shape, hide))
    mask = _insert(mask, cols, past)
    # a row axis gets the extra rows; one query row (a cached step) has one where the mask is (batch, heads, 1, keys)
    if mask.dim() >= 3 and mask.shape[-2] == length and (length > 1 or mask.dim() == 4):
        mask = torch.cat([mask.new_full((*mask.shape[:-2], n_prefix, mask.shape[-1]), attend), mask], dim=-2)
    return mask


def _pad_bias(bias: torch.Tensor, length: int, n_prefix: int, past: int = 0) -> torch.Tensor:
    rows = bias.dim() >= 2 and bias.shape[-2] == length and length > 1
    bias = _insert(bias, bias.new_zeros(*bias.shape[:-1], n_prefix), past)
    return F.pad(bias, (0, 0, n_prefix, 0)) if rows else bias


def widen_call(spec, names, args, kwargs, n_prefix: int, visible=None, past: int = 0) -> tuple[tuple, dict, int]:
    """The call's arguments with the prefix rows in front (see the module docstring), its mask and biases
    over the keys widened after `past` cached keys; also the real length."""
    hidden = get_arg(names, args, kwargs, spec.hidden)
    length = hidden.shape[1]
    for name in (spec.hidden, *spec.rows):
        t = get_arg(names, args, kwargs, name)
        if t is not None:
            args, kwargs = set_arg(names, args, kwargs, name,
                                   torch.cat([t.new_zeros(t.shape[0], n_prefix, *t.shape[2:]), t], dim=1))
    if spec.mask:
        args, kwargs = set_arg(names, args, kwargs, spec.mask,
                               widen_mask(get_arg(names, args, kwargs, spec.mask), length, n_prefix, visible,
                                          spec.mask_attend, past))
    for name in spec.biases:
        t = get_arg(names, args, kwargs, name)
        if t is not None:
            args, kwargs = set_arg(names, args, kwargs, name, _pad_bias(t, length, n_prefix, past))
    return args, kwargs, length


def flat_rows(states: torch.Tensor) -> torch.Tensor:
    """(batch, heads, P, head_dim) -> (batch, P, heads * head_dim), the layout of a projection's output."""
    return states.permute(0, 2, 1, 3).reshape(states.shape[0], states.shape[2], -1)


def place_rows(output: torch.Tensor, n_prefix: int, length: int, parts, heads: int) -> torch.Tensor:
    """`output` of a key / value (or fused) projection with its first `n_prefix` rows replaced: `parts` is a list
    of (rows (B, P, heads * head_dim), FusedSlice of the fused output, or None for the whole output)."""
    if output.dim() != 3 or output.shape[1] != n_prefix + length:
        raise AdapterError(f"prefix tuning: a key/value projection gave {tuple(output.shape)} for an attention call "
                           f"of {length} rows (+{n_prefix} prefix rows): its keys come from another sequence, which "
                           "this attention kind does not support")
    batch, _, width = output.shape
    head = output.new_zeros(batch, n_prefix, width)
    for rows, part in parts:
        rows = rows.to(output.dtype)
        if part is None:
            head = rows
        elif part.per_head and part.sizes:
            raise AdapterError(f"prefix tuning: the own-attention rows kind does not handle {part.module!r}, a "
                               "fused projection interleaved per key/value group")
        elif part.per_head:  # [q_0 k_0 v_0 q_1 k_1 v_1 ...]
            view = head.view(batch, n_prefix, heads, part.parts, width // heads // part.parts).clone()
            view[:, :, :, part.index] = rows.view(batch, n_prefix, heads, -1)
            head = view.reshape(batch, n_prefix, width)
        else:  # [q | k | v], equal parts or `sizes`
            sizes = part.sizes or (width // part.parts,) * part.parts
            a = sum(sizes[:part.index])
            head = torch.cat([head[..., :a], rows, head[..., a + sizes[part.index]:]], dim=-1)
    return torch.cat([head, output[:, n_prefix:]], dim=1)


def drop_rows(output, n_prefix: int, length: int):
    """The module's output without the extra query rows (attention probabilities keep their prefix columns)."""
    def cut(t, axis):
        return t.narrow(axis, n_prefix, length) if t.shape[axis] == n_prefix + length else t
    if isinstance(output, torch.Tensor):
        return cut(output, 1) if output.dim() >= 2 else output
    if isinstance(output, (tuple, list)) and output:
        first, *rest = output
        rest = [cut(r, -2) if isinstance(r, torch.Tensor) and r.dim() >= 3 else r for r in rest]
        out = [cut(first, 1) if isinstance(first, torch.Tensor) and first.dim() >= 2 else first, *rest]
        return type(output)(out) if isinstance(output, list) else tuple(out)
    raise AdapterError(f"prefix tuning: an attention output of type {type(output).__name__} is not supported")


class CacheRows:
    """The dynamic KV caches one attention call may write to: how many positions they hold before it (`past`),
    and, after it, the prefix rows cut out of the layer the call grew. A cache kind whose layers are not plain
    dynamic ones (static, sliding-window, quantized) or a legacy (key, value) tuple is refused."""

    def __init__(self, module, names, args, kwargs):
        from transformers.cache_utils import Cache, DynamicLayer, EncoderDecoderCache

        self.caches = []
        for name in {*names, *kwargs}:
            value = get_arg(names, args, kwargs, name)
            if isinstance(value, EncoderDecoderCache):
                self.caches += [value.self_attention_cache, value.cross_attention_cache]
            elif isinstance(value, Cache):
                self.caches.append(value)
            elif ("past" in name or "cache" in name) and isinstance(value, (tuple, list)) and any(
                    isinstance(t, torch.Tensor) for t in value):
                raise AdapterError(f"prefix tuning in {type(module).__name__} (own attention, prefix rows) cannot "
                                   "continue from a legacy (key, value) cache tuple: pass a DynamicCache")
        self.caches = list({id(c): c for c in self.caches}.values())  # (one cache passed under two names)
        for layer in self._layers():
            if type(layer) is not DynamicLayer:
                raise AdapterError(
                    f"prefix tuning in {type(module).__name__} (own attention, prefix rows) continues only from a "
                    f"DynamicCache, not from one with {type(layer).__name__} layers: generate with "
                    "cache_implementation='dynamic' or use_cache=False")
        self.before = {id(layer): layer.get_seq_length() for layer in self._layers()}
        index = getattr(module, "layer_idx", None)
        caches = [c for c in self.caches if len(getattr(c, "layers", ())) > (index or 0)] if self.caches else []
        if isinstance(index, int) and caches:
            self.past = caches[0].get_seq_length(index)
        else:  # (no layer index: every self-attention layer of a dynamic cache holds as many positions)
            lengths = {n for n in self.before.values() if n}
            if len(lengths) > 1:
                raise AdapterError(f"prefix tuning in {type(module).__name__} (own attention, prefix rows): its "
                                   "module has no layer_idx and the cache's layers differ in length")
            self.past = lengths.pop() if lengths else 0

    def _layers(self):
        return [layer for cache in self.caches for layer in getattr(cache, "layers", ())]

    def trim(self, n_prefix: int, length: int) -> None:
        """Cut the `n_prefix` rows the call wrote after `past` out of the layer it grew by n_prefix + length."""
        for layer in self._layers():
            before, now = self.before.get(id(layer), 0), layer.get_seq_length()
            if now == before:
                continue
            if now != before + n_prefix + length or before != self.past:
                raise AdapterError(f"prefix tuning: an attention call of {length} rows (+{n_prefix} prefix rows) "
                                   f"grew a cache layer from {before} to {now} positions")
            keep = [slice(0, before), slice(before + n_prefix, now)]
            layer.keys = torch.cat([layer.keys[..., s, :] for s in keep], dim=-2)
            layer.values = torch.cat([layer.values[..., s, :] for s in keep], dim=-2)
