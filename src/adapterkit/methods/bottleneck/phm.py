"""Parameterised hypercomplex multiplication (PHM) layers for Compacter (Mahabadi et al., 2021).

`W = sum_i A_i (x) B_i` (Kronecker), with `A` the n x n x n "rule" (shared across all layers of an adapter by
default) and `B_i = L_i R_i` of rank `phm_rank`. The shared parts live in one module per adapter
(`adapterkit.<name>.shared.phm`), so they are saved and loaded with the adapter (the `adapters` package lose them).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...errors import AdapterConfigError
from .config import BnConfig


def _init_w(tensor: torch.Tensor, config: BnConfig) -> None:
    for i in range(tensor.shape[0]):  # per hypercomplex component, as in the Compacter code
        if config.hypercomplex_nonlinearity == "glorot-uniform":
            nn.init.xavier_uniform_(tensor[i])
        elif config.hypercomplex_nonlinearity == "glorot-normal":
            nn.init.xavier_normal_(tensor[i])
        else:
            nn.init.normal_(tensor[i], std=config.phm_init_range)


def _init_rule(tensor: torch.Tensor, config: BnConfig) -> None:
    if config.phm_c_init == "normal":
        nn.init.normal_(tensor, std=config.phm_init_range)
    else:
        nn.init.uniform_(tensor, -1.0, 1.0)


def _rule_params(module: nn.Module, n: int, config: BnConfig) -> None:
    if config.factorized_phm_rule:
        module.phm_rule_left = nn.Parameter(torch.empty(n, n, 1), requires_grad=config.learn_phm)
        module.phm_rule_right = nn.Parameter(torch.empty(n, 1, n), requires_grad=config.learn_phm)
    else:
        module.phm_rule = nn.Parameter(torch.empty(n, n, n), requires_grad=config.learn_phm)


def _w_params(module: nn.Module, prefix: str, n: int, in_features: int, out_features: int, config: BnConfig) -> None:
    if config.factorized_phm_W:
        setattr(module, f"{prefix}W_left", nn.Parameter(torch.empty(n, in_features // n, config.phm_rank)))
        setattr(module, f"{prefix}W_right", nn.Parameter(torch.empty(n, config.phm_rank, out_features // n)))
    else:
        setattr(module, f"{prefix}W", nn.Parameter(torch.empty(n, in_features // n, out_features // n)))


def _compose_w(module: nn.Module, prefix: str, factorized: bool) -> torch.Tensor:
    if factorized:
        return torch.bmm(getattr(module, f"{prefix}W_left"), getattr(module, f"{prefix}W_right"))
    return getattr(module, f"{prefix}W")


class PHMShared(nn.Module):
    """Per-adapter parameters shared by all its PHM layers: the rule and, optionally, the W factors."""

    def __init__(self, hidden_size: int, bottleneck_size: int, config: BnConfig):
        super().__init__()
        self.config = config
        n = config.phm_dim
        if config.shared_phm_rule:
            _rule_params(self, n, config)
        if config.shared_W_phm:
            _w_params(self, "down_", n, hidden_size, bottleneck_size, config)
            _w_params(self, "up_", n, bottleneck_size, hidden_size, config)
        with torch.no_grad():
            for name, p in self.named_parameters():
                (_init_rule if name.startswith("phm_rule") else _init_w)(p, config)

    def rule(self) -> torch.Tensor:
        if self.config.factorized_phm_rule:
            return torch.bmm(self.phm_rule_left, self.phm_rule_right)
        return self.phm_rule

    def weight(self, position: str) -> torch.Tensor:
        return _compose_w(self, f"{position}_", self.config.factorized_phm_W)


class PHMLinear(nn.Module):
    """`y = x H + b` with `H = sum_i rule_i (x) W_i` (in_features x out_features)."""

    def __init__(self, in_features: int, out_features: int, position: str, config: BnConfig,
                 shared: PHMShared | None):
        super().__init__()
        n = config.phm_dim
        for size, what in ((in_features, "in_features"), (out_features, "out_features")):
            if size % n:
                raise AdapterConfigError(
                    f"PHM layer {what}={size} is not divisible by phm_dim={n}; choose phm_dim or reduction_factor "
                    "so that the hidden and bottleneck sizes are multiples of phm_dim"
                )
        self.config = config
        self.position = position
        self.in_features, self.out_features = in_features, out_features
        self.__dict__["_shared"] = shared  # a reference, not a submodule: its parameters belong to `shared.phm`
        if not config.shared_phm_rule:
            _rule_params(self, n, config)
        if not config.shared_W_phm:
            _w_params(self, "", n, in_features, out_features, config)
        self.b = nn.Parameter(torch.zeros(out_features)) if config.phm_bias else None
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("phm_rule"):
                    _init_rule(p, config)
                elif name != "b":
                    _init_w(p, config)

    @property
    def weight(self) -> torch.Tensor:
        """H, shaped (in_features, out_features)."""
        shared = self.__dict__["_shared"]
        cfg = self.config
        rule = shared.rule() if cfg.shared_phm_rule else (
            torch.bmm(self.phm_rule_left, self.phm_rule_right) if cfg.factorized_phm_rule else self.phm_rule)
        w = shared.weight(self.position) if cfg.shared_W_phm else _compose_w(self, "", cfg.factorized_phm_W)
        n, a, b = w.shape
        # sum_i kron(rule_i, w_i): (n, n) (x) (a, b) -> (n*a, n*b)
        return torch.einsum("ipq,iab->paqb", rule, w).reshape(n * a, n * b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight)
        return y + self.b if self.b is not None else y
