"""Composition blocks: how several adapters combine in one forward pass.

The blocks are plain data; `parse_composition` normalises what users pass (a name, a list, a block) into a
block, and each method's layer decides how to run it. `Stack` runs everywhere today; the other blocks are the
next milestone and are rejected with a clear error until their dispatch lands.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

from .errors import AdapterError


class AdapterCompositionBlock:
    """A node of the composition tree; children are adapter names or nested blocks."""

    name = "block"

    def __init__(self, *children: Union[str, "AdapterCompositionBlock"]):
        if not children:
            raise AdapterError(f"{type(self).__name__}() needs at least one adapter")
        self.children = [parse_composition(c) if not isinstance(c, str) else c for c in children]

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

    def __len__(self) -> int:
        return len(self.children)

    def __iter__(self):
        return iter(self.children)

    def __contains__(self, name: object) -> bool:
        return name in self.flatten()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.children == other.children  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.children)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(c) for c in self.children)})"


class Stack(AdapterCompositionBlock):
    """Adapters applied one after another at every attach point."""


class Fuse(AdapterCompositionBlock):
    """AdapterFusion: attention over the outputs of several adapters."""


class Split(AdapterCompositionBlock):
    """Split the sequence at `splits` positions, one adapter per part."""

    def __init__(self, *children, splits: Union[int, Sequence[int]]):
        super().__init__(*children)
        self.splits = [splits] * len(children) if isinstance(splits, int) else list(splits)


class BatchSplit(AdapterCompositionBlock):
    """Split the batch by `batch_sizes`, one adapter per part."""

    def __init__(self, *children, batch_sizes: Union[int, Sequence[int]]):
        super().__init__(*children)
        self.batch_sizes = [batch_sizes] * len(children) if isinstance(batch_sizes, int) else list(batch_sizes)


class Parallel(AdapterCompositionBlock):
    """Replicate the batch through each adapter; one output per branch."""


class Average(AdapterCompositionBlock):
    """Weighted average of the adapters' outputs (weights normalised to sum to 1)."""

    def __init__(self, *children, weights: Sequence[float] | None = None):
        super().__init__(*children)
        weights = [1.0] * len(children) if weights is None else list(weights)
        total = sum(weights)
        self.weights = [w / total for w in weights]


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
