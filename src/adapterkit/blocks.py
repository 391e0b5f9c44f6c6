"""Composition blocks: how several adapters combine in one forward pass.

The blocks are plain data; `parse_composition` normalises what users pass (a name, a list, a block) into a
block, and `check_nesting` enforces which block may sit inside which (the rules of adapter-transformers). How a
block runs at each kind of attach point lives in `adapterkit.compose`.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence, Union

from .errors import AdapterError
from .naming import check_adapter_name


class AdapterCompositionBlock:
    """A node of the composition tree; children are adapter names or nested blocks."""

    def __init__(self, *children: Union[str, "AdapterCompositionBlock"]):
        if not children:
            raise AdapterError(f"{type(self).__name__}() needs at least one adapter")
        self.children = [_child(self, c) for c in children]

    def flatten(self) -> list[str]:
        """All adapter names in the tree, first occurrence order."""
        out: list[str] = []
        for child in self.children:
            for name in ([child] if isinstance(child, str) else child.flatten()):
                if name not in out:
                    out.append(name)
        return out

    def first(self) -> str:
        child = self.children[0]
        return child if isinstance(child, str) else child.first()

    def last(self) -> str:
        child = self.children[-1]
        return child if isinstance(child, str) else child.last()

    @property
    def parallel_channels(self) -> int:
        """How many copies of the batch the setup needs (`Parallel` replicates it once per branch)."""
        return max(1 if isinstance(c, str) else c.parallel_channels for c in self.children)

    def __len__(self) -> int:
        return len(self.children)

    def __iter__(self):
        return iter(self.children)

    def __contains__(self, name: object) -> bool:
        return name in self.flatten()

    def _key(self):
        """The block's parameters beyond its children (sizes, weights), for equality and hashing."""
        return ()

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other) and self.children == other.children  # type: ignore[attr-defined]
                and self._key() == other._key())  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.children), self._key()))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._repr_kwargs().items())
        return f"{type(self).__name__}({', '.join(repr(c) for c in self.children)}{extra})"

    def _repr_kwargs(self) -> dict:
        return {}


class Stack(AdapterCompositionBlock):
    """Adapters applied one after another at every attach point."""


class Fuse(AdapterCompositionBlock):
    """AdapterFusion: attention over the outputs of several adapters (add the fusion with `add_adapter_fusion`).

    `name`: the fusion's name; by default the children's (last) adapter names joined by commas, e.g. "a,b".
    """

    def __init__(self, *children, name: str | None = None):
        super().__init__(*children)
        if name:  # None / "": the default, the adapters' names joined by commas
            check_adapter_name(name, "fusion")
        self._name = name

    @property
    def name(self) -> str:
        return self._name or ",".join(c if isinstance(c, str) else c.last() for c in self.children)

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and self.name == other.name  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("Fuse", tuple(self.children), self.name))

    def _repr_kwargs(self) -> dict:
        return {"name": self._name} if self._name else {}


class Split(AdapterCompositionBlock):
    """Split the sequence at `splits` positions, one adapter per part."""

    def __init__(self, *children, splits: Union[int, Sequence[int]]):
        super().__init__(*children)
        self.splits = _sizes(self, "splits", splits)

    def _key(self):
        return tuple(self.splits)

    def _repr_kwargs(self) -> dict:
        return {"splits": self.splits}


class BatchSplit(AdapterCompositionBlock):
    """Split the batch by `batch_sizes`, one adapter per part."""

    def __init__(self, *children, batch_sizes: Union[int, Sequence[int]]):
        super().__init__(*children)
        self.batch_sizes = _sizes(self, "batch_sizes", batch_sizes)

    def _key(self):
        return tuple(self.batch_sizes)

    def _repr_kwargs(self) -> dict:
        return {"batch_sizes": self.batch_sizes}


class Parallel(AdapterCompositionBlock):
    """Run the batch through each branch: the model's inputs are replicated once per branch, so the output has
    N x batch rows in branch order (rows [i*B, (i+1)*B) are branch i)."""

    @property
    def parallel_channels(self) -> int:
        return len(self.children)


class MultiTask(AdapterCompositionBlock):
    """Each row through the child its task picks: `model(..., task_ids=...)` gives one task per row, an index into
    the children (or a child's name); MTL-LoRA's tasks, whose adapters may share parameters
    (`model.share_parameters`). How it runs: compose/multitask.py."""


class Average(AdapterCompositionBlock):
    """Weighted sum of the adapters' outputs, `sum_i w_i * output_i`; weights are normalised to sum to 1 unless
    `normalize_weights=False` (what "output" is per method: see `adapterkit.compose`)."""

    def __init__(self, *children, weights: Sequence[float] | None = None, normalize_weights: bool = True):
        super().__init__(*children)
        self.weights = mixing_weights("Average", weights, len(children), normalize_weights,
                                      f"Average has {len(children)} children but {{n}} weights")

    def _key(self):
        return tuple(self.weights)

    def _repr_kwargs(self) -> dict:
        return {"weights": self.weights}


def _child(block: AdapterCompositionBlock, child):
    """An adapter name or a block as it is; a list / tuple of them becomes a Stack; anything else is an error."""
    if isinstance(child, (str, AdapterCompositionBlock)):
        return child
    if isinstance(child, (list, tuple)) and child:
        return Stack(*child)
    raise AdapterError(f"{type(block).__name__}: child {child!r} is not an adapter name, a composition block or "
                       "a non-empty list of them")


def mixing_weights(owner: str, weights, count: int, normalize: bool, mismatch: str = "") -> list[float]:
    """`count` finite weights (1 each if None), divided by their sum if `normalize`; errors name `owner`
    (`mismatch`: the error when the count is wrong, "{n}" the number given).

    Shared by the Average block and `average_adapter`: a NaN or infinite weight would make every output NaN."""
    if weights is None:
        weights = [1.0] * count
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
        raise AdapterError(f"{owner}: weights={weights!r} must be a list of {count} finite numbers")
    weights = list(weights)
    if len(weights) != count and mismatch:
        raise AdapterError(mismatch.format(n=len(weights)))
    if len(weights) != count or not all(isinstance(w, numbers.Real) and not isinstance(w, bool)
                                        and math.isfinite(w) for w in weights):
        raise AdapterError(f"{owner}: weights={weights!r} must be {count} finite numbers, one per adapter")
    weights = [float(w) for w in weights]
    if normalize:
        total = sum(weights)
        if total == 0 or not math.isfinite(total):
            raise AdapterError(f"{owner}: the weights {weights} sum to {total} and cannot be normalised; pass "
                               "normalize_weights=False")
        weights = [w / total for w in weights]
    return weights


def named_weights(owner: str, argument: str, kind: str, items, weights, normalize: bool
                  ) -> tuple[list[str], list[float]]:
    """The names and mixing weights of `average_adapter` / `average_head`: `items` (the `argument`) a list of names,
    or a dict name -> weight (then no separate `weights`); `kind` ("adapters", "heads") names them in errors."""
    if isinstance(items, dict):
        if weights is not None:
            raise AdapterError(f"{owner}: give the weights either in {argument} (a dict) or in weights")
        names, weights = list(items), list(items.values())
    elif isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise AdapterError(f"{owner}: {argument}={items!r} must be a list of {kind[:-1]} names or a dict "
                           "name -> weight")
    else:
        names = list(items)
    if not names:
        raise AdapterError(f"{owner} needs at least one {kind[:-1]} to average")
    return names, mixing_weights(owner, weights, len(names), normalize or weights is None,
                                 f"{owner}: {{n}} weights for {len(names)} {kind} {names}")


def _sizes(block: AdapterCompositionBlock, field: str, value) -> list[int]:
    sizes = [value] * len(block.children) if isinstance(value, int) else list(value)
    if len(sizes) != len(block.children) or not all(isinstance(v, int) and v >= 0 for v in sizes):
        raise AdapterError(
            f"{type(block).__name__}: {field}={value!r} must be one int >= 0 or one per child "
            f"({len(block.children)} children)"
        )
    return sizes


# Which blocks (or names, `str`) may be nested in which: the rules of adapter-transformers / `adapters`.
ALLOWED_NESTINGS: dict[type, tuple[type, ...]] = {
    Stack: (str, Fuse, Split, Parallel, BatchSplit, Average, MultiTask),
    Fuse: (str, Stack),
    Split: (str, Split, Stack, BatchSplit, Average),
    Parallel: (str, Stack, BatchSplit, Average),
    BatchSplit: (str, Stack, Split, BatchSplit, Average),
    Average: (str, Stack, Split, BatchSplit),
    MultiTask: (str, Stack, Average, Fuse),
}


def check_nesting(block: AdapterCompositionBlock, level: int = 0) -> None:
    """Raise AdapterError for a nesting the rules above do not allow, or a setup nested too deep.

    As in the `adapters` package, below the second level only names and Stacks of names may appear.
    """
    if level > 1 and not isinstance(block, Stack):
        raise AdapterError(f"adapter setup is too deep: {block!r} at nesting level {level}; below level 1 only "
                           "adapter names and Stacks of names are allowed")
    allowed = ALLOWED_NESTINGS[type(block)]
    for child in block.children:
        if type(child) not in allowed:
            kinds = ", ".join("adapter names" if t is str else t.__name__ for t in allowed)
            raise AdapterError(f"cannot nest {type(child).__name__} {child!r} inside {type(block).__name__}; "
                               f"{type(block).__name__} may contain: {kinds}")
        if isinstance(child, AdapterCompositionBlock):
            if isinstance(block, Stack) and level >= 1:
                raise AdapterError(f"adapter setup is too deep: {child!r} inside a nested Stack")
            check_nesting(child, level + 1)


def parse_composition(setup: Union[str, Iterable, AdapterCompositionBlock, None]):
    """Normalise a user's adapter setup: a name, a list of names (a Stack), or a block. None stays None."""
    if setup is None:
        return None
    if isinstance(setup, AdapterCompositionBlock):
        return setup
    if isinstance(setup, str):
        return Stack(setup)
    if isinstance(setup, (list, tuple)):
        if not setup:
            return None
        return Stack(*setup)
    raise AdapterError(
        f"an adapter setup must be a name, a list of names or a composition block, got {type(setup).__name__}"
    )
