"""The config base of peft's LyCORIS family (LoHa, LoKr): `dW` built from rank-r factors, scaled by alpha / r, with
peft's rank and module dropout, peft's per-module `rank_pattern` / `alpha_pattern` (configs/patterns.py), on
adapterkit's projection targets; and how those shared fields read from and write to a PEFT `adapter_config.json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import CheckpointError
from .base import AdapterConfig
from .patterns import check_pattern, value_for
from .targets import ProjectionTargets, targets_from_peft

PATTERNS = ("rank_pattern", "alpha_pattern")


@dataclass(eq=False)
class WeightUpdateConfig(ProjectionTargets, AdapterConfig):
    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)

    def validate(self) -> None:
        self.check_targets()
        self._check_number("r", minimum=1, integer=True)
        self._check_number("alpha", minimum=0, exclusive_min=True)
        for name in ("rank_dropout", "module_dropout"):
            self._check_number(name, minimum=0.0, maximum=1.0, exclusive_max=True)
        owner = type(self).__name__
        self.rank_pattern = check_pattern(owner, "rank_pattern", self.rank_pattern, integer=True)
        self.alpha_pattern = check_pattern(owner, "alpha_pattern", self.alpha_pattern, integer=False)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def rank_for(self, module_name: str) -> tuple[int, float]:
        """(r, alpha) of the projection module named `module_name` (its full name in the model), after the
        patterns (peft's first-match rule)."""
        return (value_for(self.rank_pattern, module_name, self.r),
                value_for(self.alpha_pattern, module_name, self.alpha))


def fields_from_peft(source, data: Mapping[str, Any], targets: Mapping[str, Any]) -> dict[str, Any]:
    """The shared fields of a PEFT LoHa / LoKr config; its patterns verbatim (the same matching rule, and the
    config validates their keys and values)."""
    patterns = {}
    for key in PATTERNS:
        pattern = data.get(key) or {}
        if not isinstance(pattern, Mapping):
            raise CheckpointError(f"{source}: PEFT {key}={pattern!r} must be an object (or null)")
        patterns[key] = dict(pattern)
    return dict(targets_from_peft(targets), r=data.get("r"), alpha=data.get("alpha"),
                rank_dropout=data.get("rank_dropout", 0.0), module_dropout=data.get("module_dropout", 0.0), **patterns)


def peft_fields(config: WeightUpdateConfig, peft_type: str, common: Mapping[str, Any]) -> dict[str, Any]:
    """The shared part of a PEFT LoHa / LoKr `adapter_config.json`."""
    common = {k: v for k, v in common.items() if k != "fan_in_fan_out"}  # not a LyCORIS field
    return {"peft_type": peft_type, "r": config.r, "alpha": config.alpha, "rank_dropout": config.rank_dropout,
            "module_dropout": config.module_dropout, "use_effective_conv2d": False, "init_weights": True,
            "layers_to_transform": None, "layers_pattern": None, "rank_pattern": dict(config.rank_pattern),
            "alpha_pattern": dict(config.alpha_pattern), **common}


def peft_export_refusal(projection) -> str | None:
    """Why peft could not load this projection's LoHa / LoKr (its LyCORIS layers take nn.Linear, not GPT-2's
    Conv1D), or None."""
    if projection.transposed:
        return (f"peft's LoHa / LoKr do not take {type(projection.module).__name__} projections (only nn.Linear), so "
                "the export would not load in peft")
    return None
