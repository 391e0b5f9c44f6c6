"""Composition of prefix tuning in attention: Stack, BatchSplit, Parallel and per-example routing.

Rows fall into groups, each with its own ordered prefixes (a Stack puts the last adapter's outermost, as without
composition). Groups with shorter prefixes are padded on the left and the padding is masked out, so every row
attends exactly to what it would attend to alone.
"""

from __future__ import annotations

import torch

from .routing import Routed
from .tree import row_segments


def row_groups(plan, rows: int) -> list[tuple]:
    """[(row index: slice or LongTensor, prefix refs)] for a compiled tree or a routed plan."""
    if not isinstance(plan, Routed):
        return row_segments(plan, rows)
    out = []
    for sub, index in plan.groups:
        if type(sub) is tuple:
            out.append((index, sub))
        else:
            out += [(index[part], refs) for part, refs in row_segments(sub, len(index))]
    return out


def stacked(refs, layer_id: int, n: int, key, value, gate_input=None, rows=None):
    """The prefix keys and values `refs` put before `n` rows, each (n, heads, prefix, head_dim), the last adapter's
    outermost (a Stack's order); `gate_input`: the attention input, of these `rows` (None: all), for prefix gates."""
    pk = pv = None
    for ref in refs:
        k, v = ref.prefix.key_values(layer_id)
        k = k.to(key.dtype).unsqueeze(0).expand(n, -1, -1, -1)
        v = v.to(value.dtype).unsqueeze(0).expand(n, -1, -1, -1)
        if ref.gate is not None:
            gate = ref.gate(gate_input if rows is None else gate_input[rows]).to(key.dtype)  # (n, 1 or 2): k, v
            k = k * gate[:, 0].view(-1, 1, 1, 1)
            v = v * gate[:, -1].view(-1, 1, 1, 1)
        pk = k if pk is None else torch.cat([k, pk], dim=2)
        pv = v if pv is None else torch.cat([v, pv], dim=2)
    return pk, pv


def extend(site, plan, module, query, key, value, mask, gate_input=None):
    """Prepend each row's prefix keys/values; mask what a row does not have. `gate_input`: the attention input,
    for prefix gates."""
    batch, heads, k_len, head_dim = key.shape
    q_len = query.shape[2]
    layer_id = site.key[0]
    groups = []
    for rows, refs in row_groups(plan, batch):
        n = (rows.stop - rows.start) if isinstance(rows, slice) else len(rows)
        if not refs or not n:
            continue
        groups.append((rows, n, *stacked(refs, layer_id, n, key, value, gate_input, rows)))
    if not groups:
        return key, value, mask
    if len(groups) == 1 and isinstance(groups[0][0], slice) and groups[0][1] == batch:
        # every row, in order, has the same prefixes (e.g. a Stack): no padding, no copies
        _, _, pk, pv = groups[0]
        return (torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2),
                extend_mask(mask, pk.shape[2], q_len, k_len, query, module))
    longest = max(pk.shape[2] for _, _, pk, _ in groups)
    prefix_k = key.new_zeros(batch, heads, longest, head_dim)
    prefix_v = value.new_zeros(batch, heads, longest, head_dim)
    visible = torch.zeros(batch, longest, dtype=torch.bool, device=key.device)
    for rows, _, pk, pv in groups:
        length = pk.shape[2]
        prefix_k[rows, :, longest - length:] = pk
        prefix_v[rows, :, longest - length:] = pv
        visible[rows, longest - length:] = True
    everywhere = sum(n for _, n, _, _ in groups) == batch and all(pk.shape[2] == longest for _, _, pk, _ in groups)
    key = torch.cat([prefix_k, key], dim=2)
    value = torch.cat([prefix_v, value], dim=2)
    if everywhere:
        return key, value, extend_mask(mask, longest, q_len, k_len, query, module)
    return key, value, _mask_rows(mask, visible, q_len, k_len, query, module)


def extend_mask(mask, n_prefix: int, q_len: int, k_len: int, query, module):
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


def _mask_rows(mask, visible: torch.Tensor, q_len: int, k_len: int, query, module):
    """The mask with a prefix part that shows each row only its own prefix positions."""
    batch, n_prefix = visible.shape
    if mask is None:
        base = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
        if getattr(module, "is_causal", False) and q_len > 1:
            base = torch.ones_like(base).tril(k_len - q_len)
        mask = base[None, None]
    mask = mask.expand(batch, *mask.shape[1:])
    shown = visible[:, None, None, :].expand(batch, mask.shape[1], mask.shape[2], n_prefix)
    if mask.dtype == torch.bool:
        prefix = shown
    else:
        prefix = torch.zeros(shown.shape, dtype=mask.dtype, device=mask.device).masked_fill(
            ~shown, torch.finfo(mask.dtype).min)
    return torch.cat([prefix, mask], dim=-1)
