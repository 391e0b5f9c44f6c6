"""ReFT configs (Wu et al., 2024): the `adapters` package's `ReftConfig` family, same names, fields and defaults.

`subtract_projection` is a real field here: in the package it is a bare class attribute, missing from saved files,
so a reloaded DiReFT ran with projection subtraction (its outputs changed on reload)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from ...configs.base import AdapterConfig
from ...errors import AdapterConfigError
from ...nn.activations import NON_LINEARITIES

DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass(eq=False)
class ReftConfig(AdapterConfig):
    """Interventions on the output of each layer in `layers` ("all" or layer ids), at the first `prefix_positions`
    and the last `suffix_positions` real (non-padding) tokens of each row:
    `h <- dropout(h + R^T (act(W h + b) - R h))` (without `- R h` when `subtract_projection` is off), R (r x d)
    orthonormal rows when `orthogonality`. Prefix and suffix have their own (R, W, b) unless `tied_weights`.
    `dtype`: the interventions' dtype (None: the model's). `init_weights_seed` (the base config's): re-seed before each
    unit's init (all units then start equal), as the package does."""

    method: ClassVar[str] = "reft"

    layers: Union[str, list]
    prefix_positions: int
    suffix_positions: int
    r: int
    orthogonality: bool
    tied_weights: bool = False
    subtract_projection: bool = True
    dropout: float = 0.05
    non_linearity: Optional[str] = None
    dtype: Optional[str] = None

    def validate(self) -> None:
        if self.layers != "all":
            if isinstance(self.layers, str):
                raise AdapterConfigError(f"{type(self).__name__}.layers={self.layers!r} must be 'all' or a list of "
                                         "layer indices (ints >= 0)")
            self._check_layer_list("layers")
            self.layers = list(self.layers)
            if not self.layers:
                raise AdapterConfigError(f"{type(self).__name__}.layers=[] edits no layer; give 'all' or at least "
                                         "one layer index")
        self._check_number("prefix_positions", minimum=0, integer=True)
        self._check_number("suffix_positions", minimum=0, integer=True)
        self._check_number("r", minimum=1, integer=True)
        self._check_bool("orthogonality", "tied_weights", "subtract_projection")
        self._check_number("dropout", minimum=0.0, maximum=1.0, exclusive_max=True)
        if self.non_linearity is not None:
            self._check_str("non_linearity", NON_LINEARITIES, lower=True)
        if self.dtype is not None:
            self._check_str("dtype", DTYPES)


@dataclass(eq=False)
class LoReftConfig(ReftConfig):
    """Low-rank linear subspace ReFT: orthonormal R, projection subtracted."""

    layers: Union[str, list] = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = True


@dataclass(eq=False)
class NoReftConfig(ReftConfig):
    """LoReFT without the orthogonality constraint."""

    layers: Union[str, list] = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = False


@dataclass(eq=False)
class DiReftConfig(ReftConfig):
    """LoReFT without orthogonality and without projection subtraction: `h <- h + R^T act(W h + b)`."""

    layers: Union[str, list] = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = False
    subtract_projection: bool = False
