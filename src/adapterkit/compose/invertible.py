"""Invertible (NICE) adapters under composition: as in the `adapters` package, only the first adapter of a setup applies,
but per row range: a BatchSplit / Parallel row uses the first adapter of its own branch."""

from __future__ import annotations

import torch

from ..blocks import BatchSplit, Parallel
from .routing import Routed
from .tree import Leaf, RowSplit, row_segments


def invertible_plan(setup, leaf):
    if isinstance(setup, str):
        module = leaf(setup)
        return None if module is None else Leaf(setup, module)
    if isinstance(setup, (BatchSplit, Parallel)):
        kids = [invertible_plan(child, leaf) for child in setup.children]
        if all(k is None for k in kids):
            return None
        return RowSplit(kids, list(setup.batch_sizes) if isinstance(setup, BatchSplit) else None)
    return invertible_plan(setup.children[0], leaf)


def apply(plan, hidden: torch.Tensor, rev: bool) -> torch.Tensor:
    if isinstance(plan, Routed):
        return plan.gather_run(lambda p, rows: apply(p, hidden[rows], rev) if p else hidden[rows])
    if type(plan) is tuple:
        return plan[0](hidden, rev=rev)
    parts = [modules[0](hidden[rows], rev=rev) if modules else hidden[rows]
             for rows, modules in row_segments(plan, hidden.shape[0])]
    return torch.cat(parts)
