"""LoRA's own `average_adapter` strategies (the generic "linear" one averages every parameter).

- "lora_linear_only_negate_b": A weighted by |w|, B by w (Zhang et al., 2023).
- "cat" (peft's `add_weighted_adapter(combination_type="cat")`): the factors side by side, rank sum(r_i), scaling
  1: `A = [w_i (alpha_i/r_i) A_i]` stacked, `B = [B_i]` side by side, so the update is exactly
  `sum_i w_i (alpha_i/r_i) B_i A_i` (no rank is lost; the new adapter costs the sources' parameters together).
- "lora_delta_w_svd": the weighted sum of the updates `sum_i w_i (alpha/r) B_i A_i`, truncated to rank `svd_rank`
  by SVD. Where `svd_rank` differs from r, the `adapters` package rescales that sum by r / svd_rank (it drops the
  old alpha / r and applies the new one); here the averaged update is the weighted sum itself (the package's
  result when svd_rank == r).
"""

from __future__ import annotations

import torch

from ...errors import AdapterError
from .modules import LoRA


class Strategy:
    """An averaging strategy for additive, ungated LoRA (`applies_to` names it in errors)."""

    applies_to = "LoRA"

    def __init__(self, name: str, takes_rank: bool):
        self.name, self.takes_rank = name, takes_rank

    def config(self, config, names: list[str], rank):
        """The new adapter's config, or a clear error for sources this strategy cannot average."""
        if config.composition_mode != "add":
            raise AdapterError(f"combine_strategy {self.name!r} is for LoRA adapters; {names[0]!r} is a "
                               "(IA)^3 adapter: use 'linear'")
        if config.is_vera:
            raise AdapterError(f"combine_strategy {self.name!r} is for LoRA's A and B; {names[0]!r} is a VeRA "
                               "adapter: use 'linear' (as the `adapters` package)")
        if config.use_gating:
            raise AdapterError(f"combine_strategy {self.name!r} averages LoRA's A and B only; gated LoRA adapters "
                               "can be averaged with 'linear'")
        return config.replace(r=rank) if rank is not None else config

    def check_rank(self, model, names: list[str], rank: int) -> None:
        modules = [m for _, m in model.adapter_state.layer_modules(names[0]) if isinstance(m, LoRA)]
        smallest = min((min(m.lora_A.shape[1], m.lora_B.shape[0]) for m in modules), default=rank)
        if not 1 <= rank <= smallest:
            raise AdapterError(f"svd_rank={rank} must be between 1 and {smallest} (the smallest side of the "
                               "projections these adapters update)")

    @torch.no_grad()
    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              rank) -> None:
        if self.takes_rank:
            _svd(model, adapter_name, names, weights, rank)
            return
        target = model.adapterkit[adapter_name]
        averaged = {}
        for key, value in target.state_dict().items():
            factors = [abs(w) if key.endswith("lora_A") else w for w in weights]
            dtype = torch.promote_types(value.dtype, torch.float32)  # bf16 / fp16 adapters summed in fp32
            averaged[key] = sum(f * source[key].to(dtype) for f, source in zip(factors, sources)).to(value)
        target.load_state_dict(averaged)


def _svd(model, adapter_name: str, names: list[str], weights: list[float], rank: int) -> None:
    state = model.adapter_state
    for key, module in state.layer_modules(adapter_name):
        if not isinstance(module, LoRA):
            continue
        dtype = torch.promote_types(module.lora_A.dtype, torch.float32)
        delta = sum(w * state.module_at(n, key).delta_weight().to(dtype) for n, w in zip(names, weights))
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        module.lora_A.copy_(vh[:rank])
        module.lora_B.copy_(u[:, :rank] * s[:rank] / module.scaling)


class Concatenation(Strategy):
    """peft's "cat": see the module docstring."""

    def __init__(self):
        super().__init__("cat", takes_rank=False)

    def config(self, config, names: list[str], rank):
        config = super().config(config, names, rank)
        total = config.r * len(names)  # average_adapter's sources share one config
        return config.replace(r=total, alpha=total, use_rslora=False)  # scaling 1: the sources' are in A

    @torch.no_grad()
    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              rank) -> None:
        state = model.adapter_state
        for key, module in state.layer_modules(adapter_name):
            parts = [(w, state.module_at(n, key)) for n, w in zip(names, weights)]
            dtype = torch.promote_types(module.lora_A.dtype, torch.float32)
            module.lora_A.copy_(torch.cat([(w * m.scaling) * m.lora_A.to(dtype) for w, m in parts]))
            module.lora_B.copy_(torch.cat([m.lora_B.to(dtype) for _, m in parts], dim=1))


STRATEGIES = {s.name: s for s in (Strategy("lora_linear_only_negate_b", False), Strategy("lora_delta_w_svd", True),
                                  Concatenation())}
