"""ReFT's intervention units and the per-layer module that applies them at the selected positions.

The parameter names are the `adapters` package's (`units.<i>.learned_source`, `units.<i>.projection`, with
torch's orthogonal parametrisation: `projection.parametrizations.weight.original` and its frozen `...0.base`),
so AdapterHub files load as they are, and every tensor the forward reads is in our saved files (the base too).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import orthogonal as orthogonal_parametrization

from ...nn.activations import activation
from ...nn.dtypes import cast
from .config import ReftConfig
from .positions import position_masks

HALF = (torch.float16, torch.bfloat16)


class ReftUnit(nn.Module):
    """`x + R^T (act(W x + b) - R x)`, then dropout (on the whole edited state, as the package does)."""

    def __init__(self, dim: int, config: ReftConfig, dtype: torch.dtype | None):
        super().__init__()
        if config.init_weights_seed is not None:
            torch.manual_seed(config.init_weights_seed)
        self.orthogonal = config.orthogonality
        self.subtract_projection = config.subtract_projection
        self.learned_source = nn.Linear(dim, config.r, bias=True, dtype=dtype)
        projection = nn.Linear(dim, config.r, bias=False, dtype=torch.float32 if self.orthogonal else dtype)
        self.projection = orthogonal_parametrization(projection) if self.orthogonal else projection
        if self.orthogonal and projection.parametrizations.weight.original.is_meta:
            # built on the meta device (a checkpoint's dry run), torch leaves the frozen base unset: give it its
            # shape, so that the expected state dict is the real one
            projection.parametrizations.weight[0].base = torch.empty(dim, dim, dtype=torch.float32, device="meta")
        self.non_linearity = nn.Identity() if config.non_linearity is None else activation(config.non_linearity)
        self.dropout = nn.Dropout(config.dropout)

    def _apply(self, fn, recurse=True):
        # torch's orthogonal map (Householder products) has no half-precision kernels: the projection stays
        # float32 (the package converts it too) and its weight is cast where it is used
        out = super()._apply(fn, recurse)
        if self.orthogonal and self.projection.parametrizations.weight.original.dtype in HALF:
            self.projection.float()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = cast(self.projection.weight, x.dtype)
        source = self.non_linearity(self.learned_source(x))
        if self.subtract_projection:
            source = source - nn.functional.linear(x, weight)
        return self.dropout(x + source @ weight)


class ReftModule(nn.Module):
    """One layer's interventions of one adapter: `units[0]` at the prefix positions and `units[1]` at the suffix
    ones (one unit for both when `tied_weights`). Where prefix and suffix overlap, the suffix edit wins (the
    package scatters the suffix last), both computed from the layer's output.

    Each unit runs on the whole (batch, length) block and `torch.where` keeps it at the selected positions: no
    data-dependent shapes (one compiled graph, any padding), for a cost of 2 r d per token and unit."""

    def __init__(self, dim: int, config: ReftConfig, name: str):
        super().__init__()
        self.prefix_positions = config.prefix_positions
        self.suffix_positions = config.suffix_positions
        self.tied_weights = config.tied_weights
        self.name = name
        dtype = getattr(torch, config.dtype) if config.dtype else None
        self.units = nn.ModuleList([ReftUnit(dim, config, dtype) for _ in range(1 if config.tied_weights else 2)])

    def forward(self, hidden: torch.Tensor, site, rows) -> torch.Tensor:
        prefix, suffix = position_masks(site, hidden, rows, self.prefix_positions, self.suffix_positions, self.name)
        dtype = self.learned_dtype()
        x = cast(hidden, dtype)
        if self.tied_weights:
            edited = self.units[0](x)
            out = torch.where(prefix | suffix, edited, x) if suffix is not None else torch.where(prefix, edited, x)
            return cast(out, hidden.dtype)
        out = x
        if self.prefix_positions:
            out = torch.where(prefix, self.units[0](x), out)
        if suffix is not None:
            out = torch.where(suffix, self.units[1](x), out)
        return cast(out, hidden.dtype)

    def learned_dtype(self) -> torch.dtype | None:
        """The dtype the units compute in: that of their learned source (the projection may be kept float32)."""
        return self.units[0].learned_source.weight.dtype

    def extra_repr(self) -> str:
        return f"prefix_positions={self.prefix_positions}, suffix_positions={self.suffix_positions}"
