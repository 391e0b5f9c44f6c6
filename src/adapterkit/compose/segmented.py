"""Many LoRA-type adapters in one batch at one projection: segmented batched matmuls (the Punica / S-LoRA SGMV idea
in plain torch ops), so the cost stays nearly flat as the number of distinct adapters grows.

Why not a gather per row: gathering each row's (r, in) and (out, r) factors copies, per forward and per
projection, rows x the adapter's size (at 64 rows of a decoding step that is more memory traffic than the base
weights), and restacking every adapter's factors per forward costs a Python call per adapter per projection.
Instead:
- the adapters' factors are stacked once, A^T as (segments, in, r_max) and s B^T as (segments, r_max, out), zero-padded
  to the largest rank (so adapters of different ranks share one batch: the padding adds exact zeros), and cached
  per projection until a factor changes (identity and `_version` of the tensors a module's `routed_stamp()` names:
  an optimizer step, `load`, a hot swap or `copy_` all bump it);
- the rows are grouped by adapter into a (segments, rows_max x tokens, in) tensor (activations only: small), and
  two `torch.bmm` read each adapter's factors once, however many rows use it;
- the deltas go back to their rows; rows with no adapter here (base rows) are left as they are.

While the factors need a gradient (routed training), they are stacked afresh each forward, differentiably. Inside
one generate(), whose steps reuse one routing (routing.py), the first step's stacks serve the later steps without
even the stamp check.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # first module of a site's tuple -> _Entry


class _Entry:
    __slots__ = ("modules", "stamp", "keep", "a", "b", "casts")

    def __init__(self, modules, stamp, keep, a, b):
        self.modules = [weakref.ref(m) for m in modules]
        self.stamp, self.keep, self.a, self.b, self.casts = stamp, keep, a, b, {}


def _stamp(modules) -> tuple | None:
    """(stamp, tensors): what the modules' factors are made of, or None where one cannot say (no caching)."""
    stamp, keep = [], []
    for module in modules:
        named = getattr(module, "routed_stamp", None)
        items = None if named is None else named()
        if items is None:
            return None
        for item in items:
            if isinstance(item, torch.Tensor):
                if item.requires_grad and torch.is_grad_enabled():
                    return None  # factors that need a gradient: stacked afresh, in the graph
                stamp.append((id(item), item._version))
                keep.append(item)  # held, so that an id is not reused while the entry lives
            else:
                stamp.append(item)
    return tuple(stamp), keep


def stacks(modules: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(A^T (n, in, r_max), s B^T (n, r_max, out)) of `modules`' `routed_factors()`, cached while unchanged."""
    found = _stamp(modules)
    if found is None:
        return _stack(modules)
    stamp, keep = found
    entry = _CACHE.get(modules[0])
    if (entry is not None and entry.stamp == stamp and len(entry.modules) == len(modules)
            and all(ref() is m for ref, m in zip(entry.modules, modules))):
        return entry.a, entry.b
    with torch.inference_mode(False), torch.no_grad():  # plain tensors: usable later outside inference mode too
        a, b = _stack(modules)
    _CACHE[modules[0]] = _Entry(modules, stamp, keep, a, b)
    return a, b


def _stack(modules) -> tuple[torch.Tensor, torch.Tensor]:
    factors = [m.routed_factors() for m in modules]
    rank = max(a.shape[0] for a, _ in factors)
    a = torch.stack([F.pad(a, (0, 0, 0, rank - a.shape[0])).t() for a, _ in factors])
    b = torch.stack([F.pad(b, (0, rank - b.shape[1])).t() for _, b in factors])
    return a.contiguous(), b.to(a.dtype).contiguous()


class Layout:
    """Rows grouped into `segments` of `width` slots each: `source[slot]` the row a slot reads (padding: row 0,
    its result dropped), `place[row]` the slot holding a row's result, `present` the rows that have a segment
    (None: all of them)."""

    __slots__ = ("segments", "width", "source", "place", "present")

    def __init__(self, member_rows: list, rows: int, device):
        """`member_rows`: per segment, its rows (Python ints): the tensors are built on the host, then moved."""
        width = max(len(r) for r in member_rows)
        source = [0] * (len(member_rows) * width)
        place = [-1] * rows
        for segment, members in enumerate(member_rows):
            for i, row in enumerate(members):
                source[segment * width + i] = row
                place[row] = segment * width + i
        present = [row for row in range(rows) if place[row] >= 0]
        self.segments, self.width = len(member_rows), width
        self.source = torch.tensor(source, dtype=torch.long).to(device)
        self.present = None if len(present) == rows else torch.tensor(present, dtype=torch.long).to(device)
        self.place = torch.tensor([place[row] for row in present], dtype=torch.long).to(device)


def layout(plan, segment_groups: tuple) -> Layout:
    """The Layout of the groups `segment_groups` (indices into `plan.groups`), shared by the forward's sites."""
    key = ("segments", segment_groups)
    found = plan.shared.get(key)
    if found is None:
        members = plan.shared.get("members")
        if members is None:  # every group's rows as Python ints (one transfer from the device per forward)
            members = plan.shared["members"] = [[] for _ in plan.groups]
            for row, group in enumerate(plan.group_ids.tolist()):
                members[group].append(row)
        found = plan.shared[key] = Layout([members[g] for g in segment_groups], plan.rows, plan.group_ids.device)
    return found


def apply(plan, segment_groups: tuple, modules: list, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`out` plus each row's own module's update: `modules[i]` serves the rows of group `segment_groups[i]`."""
    lay = layout(plan, segment_groups)
    frozen = plan.shared.get("frozen")  # a later step of one generate(): its weights have not changed
    found = plan.memo.get("stacks") if frozen else None
    a, b = found if found is not None else stacks(modules)
    if frozen:  # only then: a routing kept for plain forwards must not hold stacks of weights since changed
        plan.memo["stacks"] = a, b
    rows, width = out.shape[0], lay.width
    x3 = x.reshape(rows, -1, x.shape[-1])
    tokens = x3.shape[1]
    grouped = x3.index_select(0, lay.source).to(a.dtype)  # (as each module alone: in the adapters' dtype)
    grouped = grouped.view(lay.segments, width * tokens, x3.shape[-1])
    delta = torch.bmm(torch.bmm(grouped, a), b).view(lay.segments * width, *out.shape[1:])
    delta = delta.index_select(0, lay.place).to(out.dtype)
    if lay.present is None:
        return out + delta
    return out.index_add(0, lay.present, delta)
