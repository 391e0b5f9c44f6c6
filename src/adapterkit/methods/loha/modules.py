"""LoHa's module: four factors whose two products meet in a Hadamard product (the forward is nn/delta.py's)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ...nn.delta import DeltaWeight
from .config import LoHaConfig


class HadamardProduct(torch.autograd.Function):
    """`(w1a @ w1b) * (w2a @ w2b)` keeping only the four factors for the backward (not the two (out, in)
    products), as peft and LyCORIS do: the memory of a LoRA of rank 2r."""

    @staticmethod
    def forward(ctx, w1a, w1b, w2a, w2b):
        ctx.save_for_backward(w1a, w1b, w2a, w2b)
        return (w1a @ w1b) * (w2a @ w2b)

    @staticmethod
    def backward(ctx, grad):
        w1a, w1b, w2a, w2b = ctx.saved_tensors
        g1 = grad * (w2a @ w2b)
        g2 = grad * (w1a @ w1b)
        return g1 @ w1b.T, w1a.T @ g1, g2 @ w2b.T, w2a.T @ g2


class LoHa(DeltaWeight):
    """Parameter names and shapes as peft's (`hada_w1_a` (out, r), `hada_w1_b` (r, in), likewise w2). `r` /
    `alpha`: this projection's, where `rank_pattern` / `alpha_pattern` give it others (scaling alpha / r)."""

    def __init__(self, in_features: int, out_features: int, config: LoHaConfig, r: int | None = None,
                 alpha: float | None = None):
        r = config.r if r is None else r
        alpha = config.alpha if alpha is None else alpha
        super().__init__(alpha / r, config.rank_dropout, config.module_dropout)
        self.hada_w1_a = nn.Parameter(torch.empty(out_features, r))
        self.hada_w1_b = nn.Parameter(torch.empty(r, in_features))
        self.hada_w2_a = nn.Parameter(torch.empty(out_features, r))
        self.hada_w2_b = nn.Parameter(torch.empty(r, in_features))
        with torch.no_grad():  # in peft's order, so one seed gives peft's factors
            for p in (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            if config.init_weights:
                nn.init.zeros_(self.hada_w2_b)
            else:
                nn.init.kaiming_uniform_(self.hada_w2_b, a=math.sqrt(5))

    def update(self) -> torch.Tensor:
        return HadamardProduct.apply(self.hada_w1_a, self.hada_w1_b, self.hada_w2_a, self.hada_w2_b)
