"""Bottleneck adapter configs (Houlsby, Pfeiffer, parallel and their invertible variants).

Field names and defaults follow adapter-transformers 3.1 / `adapters` 1.x, under both name generations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Optional, Union

from ...configs.base import AdapterConfig, number_problem
from ...errors import AdapterConfigError
from ...nn.activations import NON_LINEARITIES

INIT_WEIGHTS = ("bert", "mam_adapter", "houlsby")
INV_ADAPTERS = (None, "nice")


@dataclass(eq=False)
class BnConfig(AdapterConfig):
    """A bottleneck adapter `h -> h + U f(D h)` placed after attention (`mh_adapter`), the FFN (`output_adapter`)
    and/or the cross-attention of encoder-decoder layers (`cross_adapter`).

    `reduction_factor` gives the width `hidden // reduction_factor`; a mapping gives it per layer
    (keys are layer indices as strings, plus "default").
    """

    method: ClassVar[str] = "bottleneck"

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: Union[float, Mapping] = 16
    non_linearity: str = "relu"
    cross_adapter: bool = False
    original_ln_before: bool = False
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    init_weights: str = "bert"
    is_parallel: bool = False
    scaling: Union[float, str] = 1.0
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    inv_adapter: Optional[str] = None
    inv_adapter_reduction_factor: Optional[float] = None
    leave_out: list = field(default_factory=list)
    dropout: float = 0.0
    use_gating: bool = False
    # PHM (Compacter) layers instead of nn.Linear for the down/up projections
    phm_layer: bool = False
    phm_dim: int = 4
    factorized_phm_W: bool = True
    shared_W_phm: bool = False
    shared_phm_rule: bool = True
    factorized_phm_rule: bool = False
    phm_c_init: str = "normal"
    phm_init_range: float = 0.0001
    learn_phm: bool = True
    hypercomplex_nonlinearity: str = "glorot-uniform"
    phm_rank: int = 1
    phm_bias: bool = True
    # AdapterPlus: the probability of dropping the adapter branch per batch row in training (nn/drop_path.py)
    stochastic_depth: float = 0.0

    def validate(self) -> None:
        self._check_bool("mh_adapter", "output_adapter", "cross_adapter", "original_ln_before", "original_ln_after",
                         "ln_before", "ln_after", "is_parallel", "adapter_residual_before_ln")
        self._check_choice("inv_adapter", (None, "glow", "nice"))
        if self.inv_adapter == "glow":
            raise AdapterConfigError(
                f"{type(self).__name__}.inv_adapter='glow' is not supported (the `adapters` package's GLOW coupling "
                "is unsound); allowed values: None, 'nice'"
            )
        if not (self.mh_adapter or self.output_adapter or self.cross_adapter or self.inv_adapter):
            raise AdapterConfigError(
                f"{type(self).__name__} adds nothing: set mh_adapter=True, output_adapter=True, cross_adapter=True "
                "or inv_adapter='nice'"
            )
        self._check_reduction_factor()
        self._check_str("non_linearity", NON_LINEARITIES, lower=True)
        self._check_str("init_weights", INIT_WEIGHTS)
        self._check_choice("residual_before_ln", (True, False, "post_add"))
        if isinstance(self.scaling, str):
            self._check_choice("scaling", ("learned", "channel"))
        else:
            self._check_number("scaling")
        self._check_number("inv_adapter_reduction_factor", minimum=0, exclusive_min=True,
                           optional=self.inv_adapter is None)
        self._check_layer_list("leave_out")
        self._check_number("dropout", minimum=0.0, maximum=1.0, exclusive_max=True)
        self._check_number("stochastic_depth", minimum=0.0, maximum=1.0, exclusive_max=True)
        self._check_bool("use_gating", "phm_layer", "factorized_phm_W", "shared_W_phm", "shared_phm_rule",
                         "factorized_phm_rule", "learn_phm", "phm_bias")
        # the PHM fields are checked even with phm_layer=False: a saved config must never hold garbage
        self._check_number("phm_dim", minimum=1, integer=True)
        self._check_number("phm_rank", minimum=1, integer=True)
        self._check_number("phm_init_range", minimum=0, exclusive_min=True)
        self._check_str("phm_c_init", ("normal", "uniform"))
        self._check_str("hypercomplex_nonlinearity", ("glorot-uniform", "glorot-normal", "normal"))
        if self.phm_layer and self.shared_W_phm and isinstance(self.reduction_factor, Mapping):
            raise AdapterConfigError(
                f"{type(self).__name__}: shared_W_phm=True needs one reduction_factor for all layers, "
                f"got a mapping {dict(self.reduction_factor)!r}"
            )

    def _check_reduction_factor(self) -> None:
        rf = self.reduction_factor
        expected = ("a finite number > 0 or a mapping {'default': n, '<layer index>': n} of such numbers")
        if isinstance(rf, Mapping):
            if "default" not in rf:
                raise AdapterConfigError(
                    f"{type(self).__name__}.reduction_factor mapping {dict(rf)!r} needs a 'default' key "
                    "(other keys: layer indices as strings)"
                )
            bad_keys = [k for k in rf if k != "default" and not (isinstance(k, str) and k.isdigit())]
            if bad_keys:
                raise AdapterConfigError(f"{type(self).__name__}.reduction_factor has key(s) {bad_keys!r}; "
                                         f"allowed keys: 'default' and layer indices as strings ('0', '1', ...)")
            values = rf.values()
        else:
            values = [rf]
        for v in values:
            if number_problem(v, minimum=0, exclusive_min=True):
                raise AdapterConfigError(f"{type(self).__name__}.reduction_factor={rf!r} must be {expected}")

    def union_conflict(self, other: AdapterConfig) -> str | None:
        if not isinstance(other, BnConfig):
            return super().union_conflict(other)
        if self.mh_adapter != other.mh_adapter and self.output_adapter != other.output_adapter:
            return None
        return ("two bottleneck configs must sit at different locations (one with mh_adapter=True only, the other "
                f"with output_adapter=True only); got mh_adapter={other.mh_adapter}/{self.mh_adapter}, "
                f"output_adapter={other.output_adapter}/{self.output_adapter}")

    def reduction_factor_for(self, layer_id: int) -> float:
        rf = self.reduction_factor
        if isinstance(rf, Mapping):
            return rf.get(str(layer_id), rf["default"])
        return rf


@dataclass(eq=False)
class SeqBnConfig(BnConfig):
    """Pfeiffer et al. (2020): one adapter after the FFN, on `LN(h + x)`, the layer norm applied twice."""

    original_ln_before: bool = True
    original_ln_after: bool = True
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    ln_before: bool = False
    ln_after: bool = False
    mh_adapter: bool = False
    output_adapter: bool = True
    non_linearity: str = "relu"
    reduction_factor: Union[float, Mapping] = 16


@dataclass(eq=False)
class SeqBnInvConfig(SeqBnConfig):
    """Pfeiffer adapter plus a NICE invertible adapter after the embeddings."""

    inv_adapter: Optional[str] = "nice"
    inv_adapter_reduction_factor: Optional[float] = 2


@dataclass(eq=False)
class DoubleSeqBnConfig(BnConfig):
    """Houlsby et al. (2019): adapters after attention and after the FFN, swish."""

    original_ln_before: bool = False
    original_ln_after: bool = True
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    ln_before: bool = False
    ln_after: bool = False
    mh_adapter: bool = True
    output_adapter: bool = True
    non_linearity: str = "swish"
    reduction_factor: Union[float, Mapping] = 16


@dataclass(eq=False)
class DoubleSeqBnInvConfig(DoubleSeqBnConfig):
    """Houlsby adapter plus a NICE invertible adapter after the embeddings."""

    inv_adapter: Optional[str] = "nice"
    inv_adapter_reduction_factor: Optional[float] = 2


@dataclass(eq=False)
class ParBnConfig(BnConfig):
    """He et al. (2021): a parallel adapter fed the sublayer input, scaled by 4, zero-initialised up projection."""

    original_ln_before: bool = False
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    mh_adapter: bool = False
    output_adapter: bool = True
    non_linearity: str = "relu"
    reduction_factor: Union[float, Mapping] = 2
    init_weights: str = "mam_adapter"
    is_parallel: bool = True
    scaling: Union[float, str] = 4.0


@dataclass(eq=False)
class CompacterPlusPlusConfig(SeqBnConfig):
    """Compacter++ (Mahabadi et al., 2021): Pfeiffer placement with PHM layers, rf 32, gelu."""

    phm_layer: bool = True
    reduction_factor: Union[float, Mapping] = 32
    non_linearity: str = "gelu"


@dataclass(eq=False)
class CompacterConfig(DoubleSeqBnConfig):
    """Compacter (Mahabadi et al., 2021): Houlsby placement with PHM layers, rf 32, gelu."""

    phm_layer: bool = True
    reduction_factor: Union[float, Mapping] = 32
    non_linearity: str = "gelu"


@dataclass(eq=False)
class AdapterPlusConfig(BnConfig):
    """AdapterPlus (Steitz & Roth, 2024): one adapter after the FFN on `LN(h + x)`, its own residual taken after
    that norm, no norm after; a learned per-channel scaling, Houlsby init, gelu, rf 96 and stochastic depth 0.1.
    `adapter(z) + z` with `z = LN(h + x)` is the layer's output (the package's warning applies: keep
    original_ln_before or original_ln_after True)."""

    original_ln_after: bool = False
    original_ln_before: bool = True
    residual_before_ln: Union[bool, str] = False
    stochastic_depth: float = 0.1
    init_weights: str = "houlsby"
    scaling: Union[float, str] = "channel"
    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: Union[float, Mapping] = 96
    non_linearity: str = "gelu"


# adapter-transformers 3.1 names
PfeifferConfig = SeqBnConfig
PfeifferInvConfig = SeqBnInvConfig
HoulsbyConfig = DoubleSeqBnConfig
HoulsbyInvConfig = DoubleSeqBnInvConfig
ParallelConfig = ParBnConfig
