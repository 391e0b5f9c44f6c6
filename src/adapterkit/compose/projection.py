"""Composition at a projection (additive modules such as LoRA add `delta(x)`, scaling ones such as (IA)^3 scale by
`scale(x)`: their `combine`): Stack, BatchSplit, Parallel, Average, and per-example routing.

- Stack: one after another (LoRA updates add up, (IA)^3 scales multiply), as without composition.
- BatchSplit / Parallel: each row range through its own child; rows of an absent child are left unchanged.
- MultiTask: each row through the child its task id picks (compose/multitask.py), in one batched pass where
  every child is one LoRA-type module.
- Average: "output" is what the `adapters` package average: the LoRA update (`out + sum_i w_i delta_i`) or the (IA)^3
  scaling vector (`out * sum_i w_i l_i`, an absent child counting as `l = 1`); other children (nested blocks,
  mixed kinds): `out + sum_i w_i (child_i(out) - out)`.
- Routed (per-example) batches where every row has at most one `routable()` module here run in one pass: (IA)^3
  vectors gathered per row from a stack (slot 0: ones, the plain model); LoRA-type factors (`routed_factors()`:
  A and scaled B) as segmented batched matmuls over a cached stack of the adapters' (segmented.py), so mixing
  many adapters costs about one adapter.
"""

from __future__ import annotations

import torch

from . import multitask, segmented
from .routing import Routed
from .tree import AverageNode, Leaf, RowSplit, StackNode, TaskSplit, row_slices


def run(plan, x: torch.Tensor, out: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
    """`task_ids`: the forward's, one per row, for MultiTask setups (None otherwise)."""
    if type(plan) is tuple:
        for module in plan:
            out = module(x, out)
        return out
    if isinstance(plan, Routed):
        split = plan.memo.get("split")
        if split is None:
            split = plan.memo["split"] = _split(plan)
        if split:
            return _vectorised(plan, split, x, out)
        return plan.gather_run(lambda p, rows: run(p, x[rows], out[rows],
                                                   None if task_ids is None else task_ids[rows]))
    return _eval(plan, x, out, task_ids)


def _eval(node, x: torch.Tensor, out: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(node, Leaf):
        return node.module(x, out)
    if isinstance(node, StackNode):
        for child in node.children:
            out = _eval(child, x, out, task_ids)
        return out
    if isinstance(node, TaskSplit):
        return multitask.run(node, x, out, task_ids, _eval)
    if isinstance(node, RowSplit):
        parts = [out[rows] if child is None else _eval(child, x[rows], out[rows])
                 for rows, child in zip(row_slices(node, out.shape[0]), node.children)]
        return torch.cat(parts)
    if isinstance(node, AverageNode):
        return _average(node, x, out)
    raise TypeError(f"{type(node).__name__} cannot run at a LoRA site")  # pragma: no cover - rejected by support


def _average(node: AverageNode, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    present = [(w, c) for w, c in zip(node.weights, node.children) if c is not None]
    if all(isinstance(c, Leaf) and c.module.combine == "add" for _, c in present):
        total = None
        for w, c in present:
            delta = c.module.delta(x) * w
            total = delta if total is None else total + delta
        return out + total
    if all(isinstance(c, Leaf) and c.module.combine == "scale" for _, c in present):
        scale = sum(w for w, c in zip(node.weights, node.children) if c is None)
        for w, c in present:
            scale = c.module.scale(x) * w + scale
        return out * scale
    total = None
    for w, c in present:
        change = (_eval(c, x, out) - out) * w
        total = change if total is None else total + change
    return out + total


def _vectorisable(module) -> bool:
    routable = getattr(module, "routable", None)
    return routable is not None and module.combine in ("add", "scale") and routable()


def _split(plan: Routed) -> tuple | None:
    """(IA)^3 modules, each group's slot among them (0: none), the LoRA-type groups and their modules, when every
    group runs at most one vectorisable module here; None otherwise (the groups then run one by one)."""
    if not all(type(p) is tuple and len(p) <= 1 and (not p or _vectorisable(p[0])) for p, _ in plan.groups):
        return None
    ia3s, ia3_slot, known = [], [], {}
    lora_groups, loras = [], []
    for group, (modules, _) in enumerate(plan.groups):
        module = modules[0] if modules else None
        kind = module.combine if module is not None else None
        ia3_slot.append(_slot(ia3s, known, module) if kind == "scale" else 0)
        if kind == "add":
            lora_groups.append(group)
            loras.append(module)
    return ia3s, tuple(ia3_slot), tuple(lora_groups), loras


def _vectorised(plan: Routed, split: tuple, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Every row's own module in one pass: (IA)^3 vectors gathered per row; LoRA-type updates as segmented
    batched matmuls over cached stacks of the adapters' factors (segmented.py)."""
    ia3s, ia3_slot, lora_groups, loras = split
    if ia3s:
        rows = out.shape[0]
        frozen = plan.shared.get("frozen")  # as segmented.apply: kept only for generate()'s later steps
        vectors = plan.memo.get("vectors") if frozen else None
        if vectors is None or vectors.dtype != out.dtype:
            scales = [m.routed_factors()[0] for m in ia3s]
            vectors = torch.stack([torch.ones_like(scales[0])] + scales).to(out.dtype)
            if frozen:
                plan.memo["vectors"] = vectors
        slots = plan.rows_of(ia3_slot)
        out = out * vectors[slots].view(rows, *([1] * (out.dim() - 2)), -1)
    if loras:
        out = segmented.apply(plan, lora_groups, loras, x, out)
    return out


def _slot(modules: list, known: dict, module) -> int:
    slot = known.get(id(module))
    if slot is None:
        modules.append(module)
        slot = known[id(module)] = len(modules)
    return slot
