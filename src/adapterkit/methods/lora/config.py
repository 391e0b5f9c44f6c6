"""LoRA and (IA)^3 configs: one family ("lora"), told apart by `composition_mode` ("add" / "scale")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from ...configs.base import AdapterConfig
from ...configs.module_targets import check_module_targets
from ...configs.patterns import check_pattern, value_for
from ...errors import AdapterConfigError
from .init import check_init

ATTN_MATRICES = ("q", "k", "v", "o")
# what `scale_inputs` may name: an attention matrix or an FFN projection group
INPUT_SCALABLE = ATTN_MATRICES + ("intermediate", "output")
# whose DoRA: the `adapters` package's or peft's (methods/lora/dora.py says how they differ)
DORA_SEMANTICS = ("adapters", "peft")


def location_group(location: str) -> str:
    """An interface location ("attn_q", "cross_attn_q", "intermediate_1", "output") -> "q", ..., "intermediate",
    "output"."""
    if location.startswith(("attn_", "cross_attn_")):
        return location.rsplit("_", 1)[1]
    return location.split("_", 1)[0]


@dataclass(eq=False)
class LoRAConfig(AdapterConfig):
    """LoRA (Hu et al., 2021): `h = W0 x + (alpha/r) B A x` on the chosen projections.

    `attn_matrices` picks q/k/v (and "o", the attention output projection, which the `adapters` package silently ignore);
    `intermediate_lora` / `output_lora` add the FFN input and output projections. `use_rslora`: scale by
    alpha / sqrt(r) (peft's rsLoRA). `init_weights`: "lora" (A Kaiming-uniform, B zeros), "bert" (both N(0, 0.02)),
    "ia3" (ones), and peft's "gaussian" (A ~ N(0, 1/r), B zeros) and "orthogonal" (A and B from alternate rows of
    one random orthogonal r x r matrix, so B A = 0 at the start while both train from non-zero values; even r),
    and peft's base-changing "pissa", "pissa_niter_<N>" and "olora" (init.py: B A from the weight's principal
    singular vectors / its QR factors, and the base weight made `W - s B A` so the output is unchanged; deleting
    the adapter restores W exactly). `rank_pattern` / `alpha_pattern`: per-module r and alpha, keyed by module name
    as peft (configs/patterns.py).
    `use_dora`: DoRA (Liu et al., 2024; `DoRAConfig`), a learned magnitude per output over the normalised rows of
    `W + dW`; `dora_semantics` picks whose DoRA (methods/lora/dora.py): "adapters" (the `adapters` package's,
    its checkpoints) or "peft" (peft's `use_dora=True`, PEFT checkpoints).
    """

    method: ClassVar[str] = "lora"

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: list = field(default_factory=list)
    r: int = 8
    alpha: float = 8
    dropout: float = 0.0
    attn_matrices: list = field(default_factory=lambda: ["q", "v"])
    composition_mode: str = "add"
    init_weights: str = "lora"
    use_gating: bool = False
    scale_inputs: list = field(default_factory=list)
    use_rslora: bool = False
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    use_dora: bool = False
    dora_semantics: str = "adapters"
    vera_d: float | None = None
    vera_b: float | None = None
    # peft's module selection (configs/module_targets.py); None: the location fields above
    target_modules: list | str | None = None
    exclude_modules: list | str | None = None
    feedforward_modules: list | str | None = None

    @property
    def is_vera(self) -> bool:
        """VeRA (vera.py): set by `vera_d` / `vera_b`, as the `adapters` package decides."""
        return self.vera_d is not None or self.vera_b is not None

    def validate(self) -> None:
        targeted = check_module_targets(self)
        self._check_bool("selfattn_lora", "intermediate_lora", "output_lora", "use_gating", "use_rslora", "use_dora")
        self._check_layer_list("leave_out")
        self._check_number("r", minimum=1, integer=True)
        self._check_number("alpha", minimum=0, exclusive_min=True)
        self._check_number("dropout", minimum=0.0, maximum=1.0, exclusive_max=True)
        self._check_names("attn_matrices", ATTN_MATRICES)
        self._check_str("composition_mode", ("add", "scale"))
        check_init(self)
        name = type(self).__name__
        self.rank_pattern = check_pattern(name, "rank_pattern", self.rank_pattern, integer=True)
        self.alpha_pattern = check_pattern(name, "alpha_pattern", self.alpha_pattern, integer=False)
        if self.init_weights == "orthogonal" and any(r % 2 for r in (self.r, *self.rank_pattern.values())):
            raise AdapterConfigError(f"{name}: init_weights='orthogonal' needs an even r (its A and B take "
                                     f"alternate rows of one orthogonal matrix), got r={self.r}, "
                                     f"rank_pattern={self.rank_pattern}")
        if (self.rank_pattern or self.alpha_pattern) and self.composition_mode != "add":
            raise AdapterConfigError(f"{name}: rank_pattern / alpha_pattern are for LoRA (composition_mode='add'); "
                                     "(IA)^3 has r=1 and one alpha")
        self._check_str("dora_semantics", DORA_SEMANTICS)
        if self.use_dora and self.composition_mode != "add":
            raise AdapterConfigError(f"{type(self).__name__}.use_dora is for LoRA (composition_mode='add'); (IA)^3 "
                                     "has no weight direction to normalise")
        self._check_vera()
        if self.composition_mode == "scale" and self.r != 1:
            raise AdapterConfigError(
                f"{type(self).__name__}: composition_mode='scale' ((IA)^3) needs r=1, got r={self.r}"
            )
        if self.use_rslora and self.composition_mode != "add":
            raise AdapterConfigError(f"{type(self).__name__}.use_rslora is for LoRA (composition_mode='add'); "
                                     "(IA)^3 has no rank to scale by")
        self._check_scale_inputs()
        if not targeted and not ((self.selfattn_lora and self.attn_matrices) or self.intermediate_lora
                                 or self.output_lora):
            raise AdapterConfigError(
                f"{type(self).__name__} targets no projection: enable selfattn_lora with attn_matrices, "
                "intermediate_lora or output_lora"
            )

    def _check_vera(self) -> None:
        self._check_number("vera_d", optional=True)
        self._check_number("vera_b", optional=True)
        name = type(self).__name__
        if not self.is_vera:
            if self.init_weights == "vera":
                raise AdapterConfigError(f"{name}: init_weights='vera' is VeRA's (frozen random A and B); set "
                                         "vera_d and vera_b (VeraConfig) or choose another init")
            return
        if self.vera_d is None or self.vera_b is None:
            raise AdapterConfigError(f"{name}: VeRA needs both vera_d and vera_b (the initial values of its trained "
                                     f"vectors), got vera_d={self.vera_d!r}, vera_b={self.vera_b!r}")
        if self.composition_mode != "add":
            raise AdapterConfigError(f"{name}: VeRA (vera_d / vera_b set) needs composition_mode='add', got "
                                     f"{self.composition_mode!r}")
        if self.init_weights != "vera":
            raise AdapterConfigError(f"{name}: VeRA (vera_d / vera_b set) needs init_weights='vera' (its frozen A and "
                                     f"B Kaiming-uniform), got {self.init_weights!r}")
        if self.rank_pattern or self.alpha_pattern:
            raise AdapterConfigError(f"{name}: VeRA shares one frozen pair of rank r over its projections; "
                                     "rank_pattern / alpha_pattern are for LoRA")
        if self.use_dora and self.dora_semantics != "adapters":
            raise AdapterConfigError(f"{name}: DvoRA is the `adapters` package's (dora_semantics='adapters'); "
                                     "peft has no DvoRA")

    def _check_scale_inputs(self) -> None:
        self._check_names("scale_inputs", INPUT_SCALABLE)
        if self.scale_inputs and self.composition_mode != "scale":
            raise AdapterConfigError(f"{type(self).__name__}.scale_inputs is for (IA)^3 (composition_mode='scale')")
        if self.scale_inputs and self.use_gating:
            raise AdapterConfigError(f"{type(self).__name__}: scale_inputs has no gated form; use_gating=True scales "
                                     "outputs only, so leave one of them out")
        enabled = {"intermediate": self.intermediate_lora, "output": self.output_lora,
                   **{m: self.selfattn_lora and m in self.attn_matrices for m in ATTN_MATRICES}}
        off = [m for m in self.scale_inputs if not enabled[m]]
        if off:
            raise AdapterConfigError(
                f"{type(self).__name__}.scale_inputs names {off}, which this config does not target; enable them "
                "(attn_matrices, intermediate_lora, output_lora) or leave them out")

    @property
    def scaling(self) -> float:
        """The factor on the added term: alpha / r for LoRA (alpha / sqrt(r) with `use_rslora`, rank-stabilised
        LoRA, Kalajdzievski 2023, as peft), alpha for (IA)^3 (as the `adapters` package)."""
        return self.scaling_of(self.r, self.alpha)

    def scaling_of(self, r: int, alpha: float) -> float:
        if self.composition_mode != "add":
            return float(alpha)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def rank_for(self, module_name: str) -> tuple[int, float]:
        """(r, alpha) of the projection module named `module_name` (its full name in the model), after the
        patterns."""
        return (value_for(self.rank_pattern, module_name, self.r),
                value_for(self.alpha_pattern, module_name, self.alpha))


@dataclass(eq=False)
class IA3Config(LoRAConfig):
    """(IA)^3 (Liu et al., 2022): `h = l * (W x)` on k, v and the FFN intermediate (the released 3.1 default).

    `scale_inputs` lists projections whose *input* is scaled instead, `W (l * x) + b`: the paper's FFN scaling
    (after the activation) is `IA3Config(intermediate_lora=False, output_lora=True, scale_inputs=["output"])`;
    peft calls these `feedforward_modules`.
    """

    selfattn_lora: bool = True
    intermediate_lora: bool = True
    output_lora: bool = False
    r: int = 1
    alpha: float = 1
    attn_matrices: list = field(default_factory=lambda: ["k", "v"])
    composition_mode: str = "scale"
    init_weights: str = "ia3"


@dataclass(eq=False)
class DoRAConfig(LoRAConfig):
    """DoRA (Liu et al., 2024): LoRA whose adapted weight `W + dW` is split into a learned magnitude per output
    and its normalised direction, `W' = m (W + dW) / ||W + dW||` (norms over each output's row); the `adapters`
    package's `DoRAConfig` ("dora"), its defaults. `dora_semantics="peft"` computes peft's DoRA instead."""

    use_dora: bool = True


@dataclass(eq=False)
class VeraConfig(LoRAConfig):
    """VeRA (Kopiczko et al., 2024): `h = W0 x + (alpha/r) diag(b) B diag(d) A x` with A (r, in) and B (out, r)
    frozen, random and shared by all the adapter's projections (sized to the largest, each takes its leading rows /
    columns, as peft), and only the vectors d (r, starts at `vera_d`) and b (out, starts at `vera_b`) trained.
    The frozen matrices are saved with the adapter, so a reload is exact."""

    r: int = 8
    vera_d: float | None = 0.1
    vera_b: float | None = 0.0
    init_weights: str = "vera"
    composition_mode: str = "add"


@dataclass(eq=False)
class DvoRAConfig(VeraConfig):
    """DvoRA: VeRA with DoRA's learned magnitude over each output row of the normalised `W + dW` (dvora.py has the
    `adapters` package's exact semantics)."""

    use_dora: bool = True
