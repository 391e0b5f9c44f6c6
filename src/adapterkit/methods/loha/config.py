"""LoHa's config: peft's `LoHaConfig` fields (r, alpha, rank_dropout, module_dropout, init_weights) on adapterkit's
projection targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...configs.weight_update import WeightUpdateConfig


@dataclass(eq=False)
class LoHaConfig(WeightUpdateConfig):
    """LoHa (Hyeon-Woo et al., 2022, FedPara): `dW = (alpha / r) (W1a W1b) * (W2a W2b)` (a Hadamard product of two
    rank-r products, so rank up to r^2 for 2 r (in + out) parameters). `init_weights=True`: W2b zeros (the adapter
    starts as the identity), the rest Kaiming-uniform as peft; False: all random. `rank_pattern` /
    `alpha_pattern`: per-module r and alpha, keyed by module name as peft (configs/patterns.py)."""

    method: ClassVar[str] = "loha"

    init_weights: bool = True

    def validate(self) -> None:
        super().validate()
        self._check_bool("init_weights")
