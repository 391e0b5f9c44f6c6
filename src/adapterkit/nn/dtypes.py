"""Adapters whose weights have another dtype than the activations they adapt.

Why: a bfloat16 / float16 model is commonly trained with float32 adapters (peft keeps them so by default), and
optimizer updates far below the 16-bit resolution of a weight would otherwise be lost. Each adapter module computes
in its own weights' dtype and hands the activations' dtype back: `cast(x, own)` in, `cast(result, x.dtype)` out.
Both are no-ops (no kernel, no autograd node) when the dtypes agree, which is the usual case. Under
`torch.autocast` the matmuls take autocast's dtype as always; these casts are exact either way.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def in_own_dtype(module: nn.Module, dtype: torch.dtype | None, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` computed in `dtype`, returned in x's dtype."""
    return cast(module(cast(x, dtype)), x.dtype)


class OwnDtype(nn.Module):
    """A module that knows the dtype of its floating weights (`own_dtype`, None without any), kept current through
    `.to()` / `.half()` / `.float()` (all of which run `_apply`), so the forward need not look it up. A tensor swapped
    in by hand (`param.data = ...` in another dtype) is not seen: call `refresh_dtype()` after that."""

    def refresh_dtype(self) -> None:
        first = next((p for p in self.parameters() if p.is_floating_point()), None)
        self.__dict__["own_dtype"] = None if first is None else first.dtype

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.refresh_dtype()
        return out
