"""VeRA: `out + s * b * (B[:out] (d * (A[:, :in] x)))` with A (r, in_max) and B (out_max, r) frozen, random and
shared by every projection of the adapter; d (r) and b (out) are the trained vectors, s = alpha / r.

The shared pair lives once per adapter (`shared.vera`, persistent buffers: saved with the adapter, moved with it,
never trained), sized to the largest projection it serves; each projection uses its leading columns of A and rows
of B, as peft does. So GPT-2's fused c_attn parts and Llama's narrower grouped-query k/v work, where the `adapters`
package sizes the pair to its first projection and fails on any other shape. Where all shapes agree (the
package's case) the math is the package's: `diag(b) B diag(d) A`, scaled by alpha / r. The package trains d and b
as full (r, r) and (out, out) matrices initialised diagonal (its off-diagonals move in training, so it is not
VeRA); here they are the paper's vectors. Its saved files also lack the frozen pair (reloads change outputs);
here they are in the file, so a reload is exact.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.dtypes import cast
from ...nn.gating import Gate
from ...projection import Projection
from .config import LoRAConfig

SHARED_KEY = "vera"


class VeraShared(nn.Module):
    """The frozen pair of one VeRA adapter: `vera_A` (r, in_max) and `vera_B` (out_max, r), Kaiming-uniform (gain
    sqrt(2), fan-in: the `adapters` package's `kaiming_uniform_` and peft's `_kaiming_init` alike)."""

    counted_buffers = ("vera_A", "vera_B")  # in adapter_summary (summary.py), as the `adapters` package

    def __init__(self, r: int, in_features: int, out_features: int):
        super().__init__()
        self.register_buffer("vera_A", torch.empty(r, in_features))
        self.register_buffer("vera_B", torch.empty(out_features, r))
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.vera_A)
            nn.init.kaiming_uniform_(self.vera_B)


class Vera(nn.Module):
    """One projection's VeRA: trained `vera_lambda_d` (r) and `vera_lambda_b` (out), peft's names; the shared pair
    is a reference (not a submodule: its buffers belong to `shared.vera`)."""

    combine = "add"
    run_whole = None

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, shared: VeraShared):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scaling = config.scaling
        self.vera_lambda_d = nn.Parameter(torch.full((config.r,), float(config.vera_d)))
        self.vera_lambda_b = nn.Parameter(torch.full((out_features,), float(config.vera_b)))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.gate = Gate(in_features) if config.use_gating else None
        self.__dict__["shared"] = shared

    def frozen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This projection's slices of the shared pair: A (r, in) and B (out, r)."""
        shared = self.__dict__["shared"]
        return shared.vera_A[:, :self.in_features], shared.vera_B[:self.out_features]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(d * A, s * b * B): the update is their product, a rank-r LoRA."""
        a, b = self.frozen()
        a = self.vera_lambda_d.unsqueeze(1) * a.to(self.vera_lambda_d.dtype)
        b = self.vera_lambda_b.unsqueeze(1) * b.to(self.vera_lambda_b.dtype)
        return a, b if self.gate is not None else b * self.scaling

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The update alone, in x's dtype (what an `Average` weighs)."""
        dtype = self.vera_lambda_d.dtype
        if x.dtype != dtype:
            return cast(self.delta(cast(x, dtype)), x.dtype)
        a, b = self.frozen()
        h = F.linear(self.dropout(x), a) * self.vera_lambda_d
        h = F.linear(h, b) * self.vera_lambda_b
        if self.gate is not None:  # the gate replaces alpha / r
            return h * self.gate(x).unsqueeze(-1)
        return h * self.scaling

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + cast(self.delta(x), out.dtype)

    def delta_weight(self) -> torch.Tensor:
        a, b = self.factors()
        return b @ a

    def routable(self) -> bool:
        return self.gate is None and not (self.training and isinstance(self.dropout, nn.Dropout) and self.dropout.p > 0)

    def routed_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.factors()

    def merge_into(self, projection: Projection) -> None:
        projection.set(projection.weight() + self.delta_weight().detach())


def largest(projections) -> tuple[int, int]:
    """(in_max, out_max) over the projections a VeRA adapter serves: the shared pair's size."""
    projections = list(projections)
    return max(p.in_features for p in projections), max(p.out_features for p in projections)
