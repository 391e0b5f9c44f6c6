"""The base of LoRA's `average_adapter` strategies: what generic averaging.py asks of one (MethodSpec.averaging).

- `accepts` / `requires`: the options (`svd_rank`, `density`, ...) it takes / needs; averaging.py refuses others.
- `config(config, names, options)`: the new adapter's config, or a clear error for sources it cannot average.
- `check(model, names, options)`: option values against the model, before anything changes.
- `apply(model, new_name, names, weights, sources, options)`: fill the new adapter.
"""

from __future__ import annotations

from ...errors import AdapterError
from .modules import LoRA


class Strategy:
    """An averaging strategy for additive, ungated LoRA (`applies_to` names it in errors)."""

    applies_to = "LoRA"

    def __init__(self, name: str, accepts: tuple = (), requires: tuple = ()):
        self.name, self.accepts, self.requires = name, accepts, requires

    def config(self, config, names: list[str], options: dict):
        if config.composition_mode != "add":
            raise AdapterError(f"combine_strategy {self.name!r} is for LoRA adapters; {names[0]!r} is a "
                               "(IA)^3 adapter: use 'linear'")
        if config.use_dora:
            raise AdapterError(f"combine_strategy {self.name!r} combines LoRA's A and B only, but {names[0]!r} is a "
                               "DoRA adapter (its magnitude renormalises the whole weight); use 'linear'")
        if config.is_vera:
            raise AdapterError(f"combine_strategy {self.name!r} is for LoRA's A and B; {names[0]!r} is a VeRA "
                               "adapter: use 'linear' (as the `adapters` package)")
        if config.use_gating:
            raise AdapterError(f"combine_strategy {self.name!r} averages LoRA's A and B only; gated LoRA adapters "
                               "can be averaged with 'linear'")
        if config.rank_pattern or config.alpha_pattern:
            raise AdapterError(f"combine_strategy {self.name!r} needs one r and alpha per adapter; {names[0]!r} has "
                               "rank_pattern / alpha_pattern: use 'linear'")
        return config

    def check(self, model, names: list[str], options: dict) -> None:
        """Nothing to check by default."""

    def check_rank(self, model, names: list[str], rank: int) -> None:
        modules = [m for _, m in model.adapter_state.layer_modules(names[0]) if isinstance(m, LoRA)]
        smallest = min((min(m.lora_A.shape[1], m.lora_B.shape[0]) for m in modules), default=rank)
        if not 1 <= rank <= smallest:
            raise AdapterError(f"svd_rank={rank} must be between 1 and {smallest} (the smallest side of the "
                               "projections these adapters update)")

    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              options: dict) -> None:
        raise NotImplementedError
