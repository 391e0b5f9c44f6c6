"""Exact undo for merges: a copy of the base rows a merge writes, kept until reset writes it back.

Recomputing the base from the merged weight (`W - s B A`, `W / l`) is not exact: rounding (one bf16 step per
cycle), a zero (IA)^3 entry (0 / 0), an adapter whose tensors changed while merged. So the generic merge
(registry.merge) records every `Projection.set` made while a method merges: before the first write to some rows
it copies them (weight and bias rows, in the module's dtype and on its device; for a slice of a fused projection
only the slice), and reset writes the copies back bit for bit and drops them. A quantized projection (quantized/) is
copied whole, as stored (packed weight and quant state), since requantizing any rows rewrites its packed tensor; so
two adapters merged into one quantized module are refused like two on the same rows. Any method that writes the weights
through `Projection.set` gets exact reset for free; a merge that changes a model tensor another way is an error.

The same record serves inits that change the base weights (PiSSA, OLoRA: `W - s B A`): registry.build records
the writes a build makes into `state.initialised[name]`, and deleting the adapter restores them.

Memory: while an adapter is merged, one copy of the rows it merged into (LoRA on q and v of bert-base in float32:
2 x 12 x 768 x (768 + 1) x 4 bytes = 57 MB; `MergeSnapshot.nbytes`).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Mapping

import torch
import torch.nn as nn

from .errors import AdapterError


class _Piece:
    """The copied rows of one module (`rows`: a slice, an index tensor or None for all of them)."""

    def __init__(self, projection, rows):
        self.kind = type(projection)  # Projection (projection.py imports this module)
        self.module = projection.module
        self.rows = rows
        # a target of another kind (nn/experts.py: a 3D experts parameter) gives its own part and tensors
        part = projection.part(rows) if hasattr(projection, "part") else self.kind(self.module, rows)
        self.part = part
        self.tensors = part.tensors() if hasattr(part, "tensors") else [
            t for t in (self.module.weight, getattr(self.module, "bias", None)) if t is not None]
        self.backend = part.backend
        # a quantized module: its whole stored state, exactly (requantizing any rows changes the packed tensor)
        self.quantized = None if self.backend is None else self.backend.save(self.module)
        self.weight = part.weight() if self.backend is None else None
        self.bias = part.bias()

    def restore(self) -> None:
        if self.backend is not None:
            self.backend.restore(self.module, self.quantized)
            if self.bias is not None:  # the rows' bias, as Projection.set writes it
                bias, rows = self.module.bias, self.rows
                with torch.no_grad():
                    if rows is None:
                        bias.copy_(self.bias)
                    else:
                        bias[rows if isinstance(rows, slice) else rows.to(bias.device)] = self.bias
            return
        self.part.set(self.weight, self.bias)


class MergeSnapshot:
    """What one merged adapter wrote over: pieces of base rows, and per module a mask of the rows covered."""

    def __init__(self):
        self.pieces: list[_Piece] = []
        self._masks: list[tuple[nn.Module, torch.Tensor]] = []  # (module, bool mask over its output rows)

    def mask(self, module: nn.Module) -> torch.Tensor | None:
        return next((m for owner, m in self._masks if owner is module), None)

    def overlap(self, other: "MergeSnapshot") -> nn.Module | None:
        """A module where this snapshot and `other` hold some of the same rows, or None."""
        for module, held in self._masks:
            mask = other.mask(module)
            if mask is not None and (mask & held).any():
                return module
        return None

    def note(self, projection) -> None:
        """Copy the rows `projection` is about to write that this snapshot does not hold yet."""
        wanted = _mask(projection)
        held = self.mask(_owner(projection))
        if held is None:
            held = torch.zeros_like(wanted)
            self._masks.append((_owner(projection), held))
        todo = wanted & ~held
        if not todo.any():
            return
        rows = projection.rows if torch.equal(todo, wanted) else todo.nonzero().flatten()
        if projection.backend is not None:
            rows = None  # a quantized module: its whole weight state and bias
        self.pieces.append(_Piece(projection, rows))
        held |= todo

    def restore(self) -> None:
        """Write every copied row back (the pieces are disjoint) and forget them."""
        token = _RECORDER.set(None)  # a restore is never part of a merge's record
        try:
            for piece in reversed(self.pieces):
                piece.restore()
        finally:
            _RECORDER.reset(token)
        self.pieces.clear()
        self._masks.clear()

    def tensors(self) -> set[int]:
        """ids of the module tensors a restore writes (weights and biases of the recorded modules)."""
        out = set()
        for piece in self.pieces:
            out.update(id(tensor) for tensor in piece.tensors)
        return out

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for p in self.pieces for t in (p.weight, p.bias, *_tensors(p.quantized))
                   if t is not None)


def _tensors(saved) -> list:
    """The tensors in a backend's saved state (tuples, dicts, a QuantState's attributes), for `nbytes`."""
    if isinstance(saved, torch.Tensor):
        return [saved]
    if isinstance(saved, (tuple, list)):
        return [t for item in saved for t in _tensors(item)]
    if isinstance(saved, dict):
        return [t for item in saved.values() for t in _tensors(item)]
    if saved is not None and hasattr(saved, "__dict__"):
        return [t for item in vars(saved).values() if isinstance(item, (torch.Tensor, tuple, list)) for t in _tensors(item)]
    return []


def _owner(projection):
    """What a record is keyed on: the module, or a target's own `owner` (one of several parameters of a module)."""
    return getattr(projection, "owner", projection.module)


def _mask(projection) -> torch.Tensor:
    mask = torch.zeros(projection.full_out_features, dtype=torch.bool)
    rows = projection.rows
    if rows is None or projection.backend is not None:  # quantized: saved and restored whole
        mask[:] = True
    else:
        mask[rows if isinstance(rows, slice) else rows.cpu()] = True
    return mask


class _Recorder:
    def __init__(self, name: str, snapshot: MergeSnapshot, others: Mapping[str, MergeSnapshot],
                 describe: Callable[[nn.Module], str], action: str, initialised: Mapping[str, MergeSnapshot]):
        self.name, self.snapshot, self.others, self.describe = name, snapshot, others, describe
        self.action, self.initialised = action, initialised

    def before_write(self, projection) -> None:
        wanted = _mask(projection)
        module = self.describe(projection.module)
        for others, why, undo in ((self.others, "is already merged into", "reset_adapter"),
                                  (self.initialised, "changed at its init (a base-changing init)", "delete_adapter")):
            for other, snapshot in others.items():
                held = snapshot.mask(_owner(projection))
                if held is not None and (held & wanted).any():
                    rows = ("a quantized module, written and restored whole" if projection.backend is not None
                            else "the same rows")
                    raise AdapterError(f"cannot {self.action} {self.name!r}: adapter {other!r} {why} {module} "
                                       f"({rows}); {undo}({other!r}) first")
        self.snapshot.note(projection)


_RECORDER: ContextVar[_Recorder | None] = ContextVar("adapterkit_merge_recorder", default=None)


def before_write(projection) -> None:
    """Called by `Projection.set` before it writes: while a merge is recorded, copy the rows first."""
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.before_write(projection)


@contextmanager
def recording(name: str, snapshot: MergeSnapshot, others: Mapping[str, MergeSnapshot],
              describe: Callable[[nn.Module], str], action: str = "merge",
              initialised: Mapping[str, MergeSnapshot] | None = None) -> Iterator[None]:
    """Within: every `Projection.set` first copies the rows it overwrites into `snapshot`; writing rows that
    another merged adapter (`others`) holds is refused (its restore would undo this merge), and so is writing rows
    that another adapter's base-changing init holds (`initialised`) when `action` is not a merge: two such inits
    on one row could not both be undone."""
    token = _RECORDER.set(_Recorder(name, snapshot, others, describe, action, initialised or {}))
    try:
        yield
    finally:
        _RECORDER.reset(token)
