"""Stochastic depth on an adapter branch (AdapterPlus, Steitz & Roth 2024), torchvision's `StochasticDepth(p,
"row")` as the `adapters` package uses it: in training each batch row of the branch is zeroed with probability
p and the kept rows are scaled by 1 / (1 - p); in eval it is the identity. The draw is the same call as
torchvision's (one Bernoulli per row, in the branch's dtype and device), so a seeded run draws the same rows."""

from __future__ import annotations

import torch
import torch.nn as nn


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        noise.bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"
