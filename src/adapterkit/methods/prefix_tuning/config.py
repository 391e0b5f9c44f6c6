"""Prefix tuning config (Li & Liang, 2021): learned keys/values prepended in every attention layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...configs.base import AdapterConfig
from ...nn.activations import NON_LINEARITIES


@dataclass(eq=False)
class PrefixTuningConfig(AdapterConfig):
    """`prefix_length` keys/values per layer, produced by `Embedding -> Linear(d, bottleneck_size) -> act ->
    Linear(bottleneck_size, n_layers*2*d)` (or, with `flat=True`, a parameter directly).

    `use_gating` adds a per-layer gate scaling the prefix keys and values (one gate for both when
    `shared_gating`, else one each). `encoder_prefix` / `cross_prefix` choose the attention kinds of
    encoder-decoder models.

    `shift_positions` (models with a relative position bias, T5): compute the bias over prefix and sequence
    together, as the `adapters` package does, so every real key sits `prefix_length` positions further from its
    query than it is. Off (the default), real tokens keep their positions and prefix keys get no bias. AdapterHub T5
    prefix checkpoints load with it on (and only such adapters export to that format); no effect elsewhere.
    """

    method: ClassVar[str] = "prefix_tuning"

    encoder_prefix: bool = True
    cross_prefix: bool = True
    leave_out: list = field(default_factory=list)
    flat: bool = False
    prefix_length: int = 30
    bottleneck_size: int = 512
    non_linearity: str = "tanh"
    dropout: float = 0.0
    use_gating: bool = False
    shared_gating: bool = True
    shift_positions: bool = False

    def validate(self) -> None:
        self._check_bool("encoder_prefix", "cross_prefix", "flat", "use_gating", "shared_gating", "shift_positions")
        self._check_layer_list("leave_out")
        self._check_number("prefix_length", minimum=1, integer=True)
        self._check_number("bottleneck_size", minimum=1, integer=True)
        self._check_str("non_linearity", NON_LINEARITIES, lower=True)
        self._check_number("dropout", minimum=0.0, maximum=1.0, exclusive_max=True)
