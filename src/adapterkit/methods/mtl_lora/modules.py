"""MTL-LoRA's module on one projection: `out + s * B_t Lambda_t A x` with `B_t = sum_k w_tk B_k`.

Parameters as the `adapters` package names them: `lora_A` (r, in), `lora_B` (n_up_projection, out, r), `weights`
(n_up_projection,) and the task-specific `task_specific` (r,) or (r, r) (the package's `task_specific.values`).
The package runs every up-projection and then mixes the n outputs; mixing the B_k first is the same linear map at
the cost of one LoRA, so the module offers the projection site what LoRA does (`module(x, out)`, `combine`,
`delta`, `routable` / `routed_factors` for batched routing and MultiTask, `merge_into`).

The mix is `softmax(weights / weights_sharpness)`; the package computes `exp(w / s) / sum exp(w / s)` unshifted,
which overflows to NaN once a weight passes ~4.4 at the default sharpness (0.05); softmax is the same where that
is finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.dtypes import cast
from ...nn.gating import Gate
from .config import MTLLoRAConfig


class MTLLoRA(nn.Module):
    combine = "add"
    run_whole = None  # no fused path: the plain projection plus the update

    def __init__(self, in_features: int, out_features: int, config: MTLLoRAConfig):
        super().__init__()
        r, n = config.r, config.n_up_projection
        self.scaling = config.scaling
        self.sharpness = config.weights_sharpness
        self.diagonal = config.task_specific_matrix_type == "singular_values"
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        self.lora_B = nn.Parameter(torch.empty(n, out_features, r))
        # ones: Lambda = I at the start, so both types start as the same adapter (the package cannot build "linear")
        self.task_specific = nn.Parameter(torch.ones(r) if self.diagonal else torch.eye(r))
        self.weights = nn.Parameter(torch.ones(n))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.gate = Gate(in_features) if config.use_gating else None
        with torch.no_grad():
            if config.init_weights == "lora":
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
                nn.init.zeros_(self.lora_B)
            else:  # "bert"
                nn.init.normal_(self.lora_A, std=0.02)
                nn.init.normal_(self.lora_B, std=0.02)

    def mixing(self) -> torch.Tensor:
        """The task's weights over the up-projections, summing to 1."""
        return torch.softmax(self.weights / self.sharpness, dim=0)

    def up(self) -> torch.Tensor:
        """`B_t Lambda_t^T`-form up-projection (out, r): `x A^T Lambda B_t^T = F.linear(F.linear(x, A), up())`."""
        mixed = torch.einsum("k,kor->or", self.mixing().to(self.lora_B.dtype), self.lora_B)
        if self.diagonal:
            return mixed * self.task_specific
        return mixed @ self.task_specific.T

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The update alone, `s B_t Lambda_t A x` (or gated), in x's dtype."""
        dtype = self.lora_A.dtype
        if x.dtype != dtype:
            return cast(self.delta(cast(x, dtype)), x.dtype)
        delta = F.linear(F.linear(self.dropout(x), self.lora_A), self.up())
        if self.gate is not None:  # the gate replaces alpha / r
            return delta * self.gate(x).unsqueeze(-1)
        return delta * self.scaling

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + cast(self.delta(x), out.dtype)

    def routable(self) -> bool:
        return self.gate is None and not (self.training and isinstance(self.dropout, nn.Dropout))

    def routed_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A, self.up() * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.up() @ self.lora_A) * self.scaling

    def merge_into(self, projection) -> None:
        weight = projection.weight()
        projection.set(weight + self.delta_weight().to(weight.dtype))
