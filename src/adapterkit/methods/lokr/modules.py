"""LoKr's module: a Kronecker product of two factors, either of them low-rank (the forward is nn/delta.py's)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ...nn.delta import DeltaWeight
from .config import LoKrConfig


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n), m * n = dimension, as peft and LyCORIS split a dimension: (factor, dimension / factor) when `factor`
    divides it, else the divisor pair nearest the square root with m <= factor (-1: no bound), m <= n."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    bound = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > bound or new_m > factor:
            break
        m, n = new_m, new_n
    return (m, n) if m <= n else (n, m)


class LoKr(DeltaWeight):
    """Parameter names as peft's: `lokr_w1` (a, c) or `lokr_w1_a` (a, r) / `lokr_w1_b` (r, c); `lokr_w2` (b, d) or
    `lokr_w2_a` (b, r) / `lokr_w2_b` (r, d). `r` / `alpha`: this projection's, where `rank_pattern` /
    `alpha_pattern` give it others (they decide which factors are low-rank and the scaling alpha / r)."""

    def __init__(self, in_features: int, out_features: int, config: LoKrConfig, r: int | None = None,
                 alpha: float | None = None):
        r = config.r if r is None else r
        alpha = config.alpha if alpha is None else alpha
        super().__init__(alpha / r, config.rank_dropout, config.module_dropout, config.rank_dropout_scale)
        out_a, out_b = factorization(out_features, config.decompose_factor)
        in_c, in_d = factorization(in_features, config.decompose_factor)
        self.full_w1 = not (config.decompose_both and r < max(out_a, in_c) / 2)
        self.full_w2 = not r < max(out_b, in_d) / 2
        if self.full_w1:
            self.lokr_w1 = nn.Parameter(torch.empty(out_a, in_c))
        else:
            self.lokr_w1_a = nn.Parameter(torch.empty(out_a, r))
            self.lokr_w1_b = nn.Parameter(torch.empty(r, in_c))
        if self.full_w2:
            self.lokr_w2 = nn.Parameter(torch.empty(out_b, in_d))
        else:
            self.lokr_w2_a = nn.Parameter(torch.empty(out_b, r))
            self.lokr_w2_b = nn.Parameter(torch.empty(r, in_d))
        self._init(config.init_weights)

    @torch.no_grad()
    def _init(self, mode) -> None:
        """peft's three initialisations, in its order (one seed gives peft's factors)."""
        def kaiming(p):
            nn.init.kaiming_uniform_(p, a=math.sqrt(5))
        zero_w1, zero_w2 = mode is True, mode == "lycoris"
        if self.full_w1:
            (nn.init.zeros_ if zero_w1 else kaiming)(self.lokr_w1)
        else:
            (nn.init.zeros_ if zero_w1 else kaiming)(self.lokr_w1_a)
            kaiming(self.lokr_w1_b)
        if self.full_w2:
            (nn.init.zeros_ if zero_w2 else kaiming)(self.lokr_w2)
        elif zero_w2:  # lycoris: w2_b zeros first, then w2_a
            nn.init.zeros_(self.lokr_w2_b)
            kaiming(self.lokr_w2_a)
        else:
            kaiming(self.lokr_w2_a)
            kaiming(self.lokr_w2_b)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        w1 = self.lokr_w1 if self.full_w1 else self.lokr_w1_a @ self.lokr_w1_b
        w2 = self.lokr_w2 if self.full_w2 else self.lokr_w2_a @ self.lokr_w2_b
        return w1, w2

    def update(self) -> torch.Tensor:
        w1, w2 = self.factors()
        return torch.kron(w1, w2.contiguous())
