"""A setup compiled for one site: the same tree with each adapter name replaced by its module there.

Names without a module at the site (another method, a left-out layer, a merged adapter) become None; a subtree
with nothing at the site compiles to None, so an inactive site costs nothing. Stacks drop their None children;
row splits and averages keep them (their rows pass through / they weigh in as "no change").
"""

from __future__ import annotations

from typing import Callable

from ..blocks import Average, BatchSplit, Fuse, MultiTask, Parallel, Split, Stack
from ..errors import AdapterError


class Leaf:
    __slots__ = ("name", "module")

    def __init__(self, name: str, module):
        self.name, self.module = name, module


class StackNode:
    __slots__ = ("children",)

    def __init__(self, children: list):
        self.children = children


class RowSplit:
    """BatchSplit (`sizes`) or Parallel (`sizes` None: `channels` equal parts of the rows)."""

    __slots__ = ("children", "sizes", "channels")

    def __init__(self, children: list, sizes: list[int] | None):
        self.children, self.sizes, self.channels = children, sizes, len(children)


class AverageNode:
    __slots__ = ("children", "weights")

    def __init__(self, children: list, weights: list[float]):
        self.children, self.weights = children, weights


class FuseNode:
    """AdapterFusion at one residual site: the fused children, the fusion layer, the last fused adapter."""

    __slots__ = ("children", "fusion", "last", "name")

    def __init__(self, children: list, fusion, last, name: str):
        self.children, self.fusion, self.last, self.name = children, fusion, last, name


class TaskSplit:
    """MultiTask: each row through the child its task id picks (the forward's `task_ids`, compose/multitask.py)."""

    __slots__ = ("children",)

    def __init__(self, children: list):
        self.children = children


class SeqSplit:
    __slots__ = ("children", "splits")

    def __init__(self, children: list, splits: list[int]):
        self.children, self.splits = children, splits


def compile_tree(setup, leaf: Callable[[str], object], fuse: Callable[[Fuse, list], object] | None = None):
    """Compile `setup` with `leaf(name) -> module or None`; `fuse(block, children)` builds a Fuse node (bottleneck
    sites only; elsewhere validation has already rejected Fuse for the adapters that live there)."""
    if isinstance(setup, str):
        module = leaf(setup)
        return None if module is None else Leaf(setup, module)
    kids = [compile_tree(child, leaf, fuse) for child in setup.children]
    if all(k is None for k in kids):
        return None
    if isinstance(setup, Stack):
        kids = [k for k in kids if k is not None]
        return kids[0] if len(kids) == 1 else StackNode(kids)
    if isinstance(setup, BatchSplit):
        return RowSplit(kids, list(setup.batch_sizes))
    if isinstance(setup, Parallel):
        return RowSplit(kids, None)
    if isinstance(setup, Average):
        return AverageNode(kids, list(setup.weights))
    if isinstance(setup, Split):
        return SeqSplit(kids, list(setup.splits))
    if isinstance(setup, MultiTask):
        return TaskSplit(kids)
    if isinstance(setup, Fuse) and fuse is not None:
        return fuse(setup, kids)
    raise AdapterError(f"{type(setup).__name__} cannot run at this attach point")  # pragma: no cover


def first_module(node):
    """The module of the first adapter present in a compiled subtree (whose pre-processing a block uses)."""
    if node is None:
        return None
    if isinstance(node, Leaf):
        return node.module
    if isinstance(node, FuseNode):
        return node.last
    for child in node.children:
        found = first_module(child)
        if found is not None:
            return found
    return None


def row_slices(node: RowSplit, rows: int) -> list[slice]:
    """The contiguous row ranges of a BatchSplit / Parallel over a batch of `rows` rows."""
    if node.sizes is None:
        if rows % node.channels:
            raise AdapterError(
                f"Parallel with {node.channels} branches got a batch of {rows} rows, not a multiple of "
                f"{node.channels}; call the model adapterkit.init() was applied to (it replicates the inputs)"
            )
        sizes = [rows // node.channels] * node.channels
    else:
        sizes = node.sizes
        if sum(sizes) != rows:
            raise AdapterError(f"BatchSplit(batch_sizes={sizes}) needs a batch of {sum(sizes)} rows, got {rows}")
    out, start = [], 0
    for size in sizes:
        out.append(slice(start, start + size))
        start += size
    return out


def row_segments(node, rows: int) -> list[tuple[slice, tuple]]:
    """Contiguous row ranges with the modules that apply to them, in order, for trees of leaves, Stacks and row
    splits (what prefix tuning and invertible adapters support): a Stack concatenates, a row split partitions."""
    if node is None:
        return [(slice(0, rows), ())]
    if isinstance(node, Leaf):
        return [(slice(0, rows), (node.module,))]
    if isinstance(node, StackNode):
        segments = [(slice(0, rows), ())]
        for child in node.children:
            segments = _refine(segments, row_segments(child, rows))
        return segments
    if isinstance(node, RowSplit):
        out = []
        for part, child in zip(row_slices(node, rows), node.children):
            for sub, modules in row_segments(child, part.stop - part.start):
                out.append((slice(part.start + sub.start, part.start + sub.stop), modules))
        return out
    raise AdapterError(f"{type(node).__name__} cannot split rows")  # pragma: no cover


def _refine(a: list, b: list) -> list:
    """The common refinement of two partitions of the same rows, modules of `a` then of `b`."""
    out, i, j, start = [], 0, 0, 0
    while i < len(a) and j < len(b):
        stop = min(a[i][0].stop, b[j][0].stop)
        if stop > start:
            out.append((slice(start, stop), a[i][1] + b[j][1]))
        start = stop
        if a[i][0].stop == stop:
            i += 1
        if j < len(b) and b[j][0].stop == stop:
            j += 1
    return out
