"""LoKr's config: peft's `LoKrConfig` fields on adapterkit's projection targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...configs.weight_update import WeightUpdateConfig


@dataclass(eq=False)
class LoKrConfig(WeightUpdateConfig):
    """LoKr (Yeh et al., 2023): `dW = (alpha / r) W1 (x) W2`, a Kronecker product of a small (a, c) and a (b, d)
    factor of the (out, in) = (a b, c d) weight (`decompose_factor`: a, c as close to it as divisibility allows,
    -1: near the square root). W2 is the low-rank product W2a W2b when r < max(b, d) / 2, and W1 too with
    `decompose_both`. `init_weights=True`: W1 (or W1a) zeros, as peft; "lycoris": W2 (or W2b) zeros; False: random.
    `rank_dropout_scale`: rescale kept rows by their mean, as peft. `rank_pattern` / `alpha_pattern`: per-module r
    (which also decides, per module, which factors are low-rank) and alpha, keyed by module name as peft."""

    method: ClassVar[str] = "lokr"

    decompose_both: bool = False
    decompose_factor: int = -1
    rank_dropout_scale: bool = False
    init_weights: bool | str = True

    def validate(self) -> None:
        super().validate()
        self._check_bool("decompose_both", "rank_dropout_scale")
        if self.decompose_factor != -1:
            self._check_number("decompose_factor", minimum=1, integer=True)
        self._check_choice("init_weights", (True, False, "lycoris"))
