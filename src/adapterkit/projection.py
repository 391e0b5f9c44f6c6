"""A projection as LoRA and (IA)^3 see it: `y = W x + b` with W of shape (out, in), possibly a slice of a fused one.

Models store projections differently (nn.Linear keeps W as (out, in); GPT-2's Conv1D keeps it as (in, out)) and
some fuse q/k/v into one module (GPT-2's `c_attn`, DeBERTa's `in_proj`). `Projection` hides both: it names the rows
of the module's output that belong to it, and reads / writes its weight in the (out, in) orientation, so the
method code never sees the storage. New module types register their weight layout with `register_weight_layout`.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from . import merge_snapshot
from .errors import AdapterError
from .quantized import backend_of

# module type -> whether its weight is stored (in, out) instead of nn.Linear's (out, in)
_TRANSPOSED: dict[type, bool] = {nn.Linear: False, Conv1D: True}


def register_weight_layout(module_type: type, *, transposed: bool) -> None:
    """Teach adapterkit a projection module type (its `weight` (out, in), or (in, out) if `transposed`)."""
    _TRANSPOSED[module_type] = transposed


def _layout(module: nn.Module) -> bool:
    if backend_of(module) is not None:
        return False  # a quantized projection reads and writes its weight (out, in) through its backend
    for module_type, transposed in _TRANSPOSED.items():
        if isinstance(module, module_type):
            return transposed
    allowed = ", ".join(t.__name__ for t in _TRANSPOSED)
    raise AdapterError(
        f"{type(module).__name__} is not a projection LoRA / (IA)^3 can attach to; supported module types: {allowed} "
        "(register others with adapterkit.projection.register_weight_layout)"
    )


def _shape(module: nn.Module, transposed: bool) -> tuple[int, int]:
    """(out, in) of a projection module."""
    backend = backend_of(module)
    if backend is not None:
        return backend.shape(module)
    shape = module.weight.shape
    return (shape[1], shape[0]) if transposed else (shape[0], shape[1])


def _rows(out_features: int, index: int, parts: int, heads: int | None,
          sizes: tuple[int, ...] | None = None) -> slice | torch.Tensor:
    if heads and sizes:  # interleaved per group, each group [part 0 | part 1 | ...] of widths `sizes`
        group = sum(sizes)
        if out_features != heads * group:
            raise AdapterError(f"a fused projection with {out_features} outputs is not {heads} groups of "
                               f"{'+'.join(map(str, sizes))}")
        starts = torch.arange(heads) * group + sum(sizes[:index])
        return (starts[:, None] + torch.arange(sizes[index])[None, :]).reshape(-1)
    if out_features % parts or (heads and out_features % (parts * heads)):
        raise AdapterError(f"a fused projection with {out_features} outputs cannot be split into {parts} parts"
                           + (f" per each of {heads} heads" if heads else ""))
    size = out_features // parts
    if not heads:
        return slice(index * size, (index + 1) * size)
    head_dim = size // heads
    starts = torch.arange(heads) * parts * head_dim + index * head_dim
    return (starts[:, None] + torch.arange(head_dim)[None, :]).reshape(-1)


class Projection:
    """One projection (`rows=None`) or the rows `rows` of a fused projection's output."""

    def __init__(self, module: nn.Module, rows: slice | torch.Tensor | None = None):
        self.module = module
        self.transposed = _layout(module)
        self.backend = backend_of(module)
        full_out, self.in_features = _shape(module, self.transposed)
        self.full_out_features = full_out
        self.rows = rows
        if rows is None:
            self.out_features = full_out
        elif isinstance(rows, slice):
            self.out_features = len(range(*rows.indices(full_out)))
        else:
            self.out_features = int(rows.numel())

    @classmethod
    def fused(cls, module: nn.Module, index: int, parts: int, heads: int | None = None,
              sizes: tuple[int, ...] | None = None) -> "Projection":
        """Part `index` of `parts`, contiguous or interleaved per head (per group of widths `sizes`)."""
        full_out = _shape(module, _layout(module))[0]
        return cls(module, _rows(full_out, index, parts, heads, sizes))

    # -- the forward path --------------------------------------------------------------------------
    def apply(self, output: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`output` with this projection's part replaced by `fn(part)` (out of place, autograd-safe)."""
        if self.rows is None:
            return fn(output)
        if isinstance(self.rows, slice):
            start, stop, _ = self.rows.indices(output.shape[-1])
            return torch.cat((output[..., :start], fn(output[..., start:stop]), output[..., stop:]), dim=-1)
        rows = self.rows.to(output.device)
        return output.index_copy(-1, rows, fn(output.index_select(-1, rows)))

    # -- the weights (merging) ---------------------------------------------------------------------
    def weight(self) -> torch.Tensor:
        """A copy of W, shape (out, in) (dequantized, for a quantized projection)."""
        if self.backend is not None:
            w = self.backend.dequantize(self.module)
            return (w if self.rows is None else w[self._rows(w)]).clone()
        w = self.module.weight.detach()
        w = w.t() if self.transposed else w
        return (w if self.rows is None else w[self._rows(w)]).clone()

    def bias(self) -> torch.Tensor | None:
        b = getattr(self.module, "bias", None)
        if b is None:
            return None
        b = b.detach()
        return (b if self.rows is None else b[self._rows(b)]).clone()

    @torch.no_grad()
    def set(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Write W (out, in) and, if given, b back into the module. During a merge the rows are first copied
        (merge_snapshot.py), so that reset can restore them exactly."""
        merge_snapshot.before_write(self)
        if self.backend is not None:
            self._requantize(weight)
        else:
            self._write(weight)
        if bias is not None:
            b = self.module.bias
            if self.rows is None:
                b.copy_(bias.to(device=b.device, dtype=b.dtype))
            else:
                b[self._rows(b)] = bias.to(device=b.device, dtype=b.dtype)

    def _requantize(self, weight: torch.Tensor) -> None:
        """Dequantize, write the rows, quantize again (peft's bnb merge). This rounds: warned once per call site."""
        warnings.warn(f"writing into a quantized projection ({self.backend.name}) dequantizes, changes and quantizes "
                      "the weight again, so the result is rounded to the quantization grid; reset_adapter / "
                      "delete_adapter restore the original quantized weights exactly", stacklevel=3)
        full = self.backend.dequantize(self.module)
        if self.rows is None:
            full = weight.to(device=full.device, dtype=full.dtype)
        else:
            full[self._rows(full)] = weight.to(device=full.device, dtype=full.dtype)
        self.backend.requantize(self.module, full)

    def _write(self, weight: torch.Tensor) -> None:
        w = self.module.weight
        view = w.t() if self.transposed else w
        if self.rows is None:
            view.copy_(weight.to(device=w.device, dtype=w.dtype))
        else:
            view[self._rows(view)] = weight.to(device=w.device, dtype=w.dtype)

    def _rows(self, tensor: torch.Tensor):
        return self.rows if isinstance(self.rows, slice) else self.rows.to(tensor.device)
