"""MultiTask: `model(..., task_ids=...)` sends each row through the child its task id picks.

The forward pre-hook checks the ids once (`task_ids_for`: one per row, each an index into the children or a
child's name) and keeps them for the forward; each site then runs its compiled `TaskSplit` (tree.py) with them
(`run`). Rows of one task go through that child exactly as a batch of their own would: the `adapters` package's
MultiTask (a BatchSplit over the rows sorted by task), without the sort.

Where every child is one module with batched factors (`routable()` / `routed_factors()`: LoRA, MTL-LoRA), all
rows run in one pass: each row's factors are gathered by its task id and applied with two batched matmuls, no
data-dependent Python, so torch.compile traces it as one graph. Other children run on their rows in turn.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..blocks import AdapterCompositionBlock, MultiTask
from ..errors import AdapterError
from .tree import Leaf, TaskSplit

TASK_IDS = "task_ids"


def blocks_in(setup) -> list[MultiTask]:
    """The MultiTask blocks of a setup (a top-level block, or inside a Stack)."""
    if not isinstance(setup, AdapterCompositionBlock):
        return []
    own = [setup] if isinstance(setup, MultiTask) else []
    return own + [b for child in setup.children for b in blocks_in(child)]


def task_ids_for(setups: Iterable, task_ids, rows: int, device, merged=()) -> torch.Tensor | None:
    """The forward's task ids as a LongTensor (rows,) on `device`, checked against the MultiTask blocks of the
    active `setups`; None when no setup has one (`task_ids` are then ignored, as the `adapters` package does).
    `merged`: the merged adapters, which would act on every row, so none may be a task here."""
    setups = [s for s in setups if s is not None]
    blocks = [b for s in setups for b in blocks_in(s)]
    if not blocks:
        return None
    shown = blocks[0]
    folded = [n for b in blocks for n in b.flatten() if n in merged]
    if folded:
        raise AdapterError(f"adapter(s) {', '.join(map(repr, folded))} of {shown!r} are merged into the weights, so "
                           "they would act on the rows of every task; reset_adapter(...) them first")
    if any(s.parallel_channels > 1 for s in setups):
        raise AdapterError(f"{shown!r} cannot run with Parallel in the same setup: Parallel replicates the batch, "
                           "and task_ids name one task per row of the batch")
    if task_ids is None:
        raise AdapterError(
            f"the active setup has {shown!r}: pass task_ids=... to the forward, one task per row of the batch (an "
            f"index 0..{len(shown) - 1} into its children, or a child adapter's name)")
    ids = _as_tensor(task_ids, blocks)
    if ids.dim() != 1 or ids.shape[0] != rows:
        raise AdapterError(f"task_ids has shape {tuple(ids.shape)} for a batch of {rows} rows; give one task id per "
                           f"row (a 1-D tensor or list of {rows})")
    if not torch.compiler.is_compiling():  # reading the values would break the graph; indexing checks them anyway
        count = min(len(b) for b in blocks)
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= count:
            bad = low if low < 0 else high
            raise AdapterError(f"task_ids contains {bad}, but {shown!r} has {count} tasks: each id must be in "
                               f"0..{count - 1}")
    return ids.to(device=device)


def _as_tensor(task_ids, blocks: list[MultiTask]) -> torch.Tensor:
    if isinstance(task_ids, torch.Tensor):
        if task_ids.dtype.is_floating_point or task_ids.dtype.is_complex or task_ids.dtype == torch.bool:
            raise AdapterError(f"task_ids must hold integers (task indices), got a {task_ids.dtype} tensor")
        return task_ids.long()
    if isinstance(task_ids, (str, bytes)) or not isinstance(task_ids, (list, tuple)):
        raise AdapterError(f"task_ids must be a tensor or a list of task indices / child names, one per row; got "
                           f"{type(task_ids).__name__}")
    out = []
    for entry in task_ids:
        if isinstance(entry, str):
            out.append(_index_of(entry, blocks))
        elif isinstance(entry, int) and not isinstance(entry, bool):
            out.append(entry)
        else:
            raise AdapterError(f"task_ids entries must be task indices (ints) or child adapter names, got {entry!r}")
    return torch.tensor(out, dtype=torch.long)


def _index_of(name: str, blocks: list[MultiTask]) -> int:
    found = {b.children.index(name) if name in b.children else None for b in blocks}
    if len(found) != 1 or None in found:
        raise AdapterError(f"task_ids names {name!r}, which is not a child of {blocks[0]!r}"
                           + ("" if len(blocks) == 1 else " (or not at the same position in every MultiTask)"))
    return found.pop()


def run(node: TaskSplit, x: torch.Tensor, out: torch.Tensor, task_ids, child_run: Callable) -> torch.Tensor:
    """A projection's output under `node`: rows of task i get `child_run(child_i, x_rows, out_rows)`; rows of a
    child with nothing here are left as they are. `child_run` evaluates a compiled child (compose/projection.py)."""
    if task_ids is None:
        raise AdapterError("a MultiTask setup ran without task_ids: call the model itself with task_ids=... (the "
                           "model adapterkit.init() was applied to; it hands them to every layer)")
    if task_ids.shape[0] != x.shape[0]:
        raise AdapterError(f"MultiTask got {x.shape[0]} rows at a projection but task_ids for {task_ids.shape[0]}")
    if all(c is None or (isinstance(c, Leaf) and _batched(c.module)) for c in node.children):
        return _vectorised(node, x, out, task_ids)
    result = out.clone()
    for task, child in enumerate(node.children):
        if child is None:
            continue
        rows = (task_ids == task).nonzero().squeeze(1)
        if rows.numel():
            result[rows] = child_run(child, x[rows], out[rows])
    return result


def _batched(module) -> bool:
    routable = getattr(module, "routable", None)
    return routable is not None and getattr(module, "combine", None) == "add" and routable()


def _vectorised(node: TaskSplit, x: torch.Tensor, out: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
    factors = [None if c is None else c.module.routed_factors() for c in node.children]
    present = [f for f in factors if f is not None]
    rank = max(a.shape[0] for a, _ in present)
    a_like, b_like = present[0]
    a = torch.stack([_padded(a_like.new_zeros(rank, a_like.shape[1]) if f is None else f[0], rank, 0)
                     for f in factors])
    b = torch.stack([_padded(b_like.new_zeros(b_like.shape[0], rank) if f is None else f[1], rank, 1)
                     for f in factors]).to(a.dtype)
    rows = x.shape[0]
    x3 = x.reshape(rows, -1, x.shape[-1]).to(a.dtype)  # in the adapters' dtype, as each module alone (dtypes.py)
    delta = torch.bmm(torch.bmm(x3, a[task_ids].transpose(1, 2)), b[task_ids].transpose(1, 2))
    return out + delta.view(out.shape).to(out.dtype)


def _padded(t: torch.Tensor, rank: int, dim: int) -> torch.Tensor:
    missing = rank - t.shape[dim]
    if not missing:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t, t.new_zeros(shape)], dim=dim)
