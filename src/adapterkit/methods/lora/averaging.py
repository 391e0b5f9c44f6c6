"""LoRA's own `average_adapter` strategies (the generic "linear" one averages every parameter).

- "lora_linear_only_negate_b": A weighted by |w|, B by w (Zhang et al., 2023).
- "cat" (peft's `add_weighted_adapter(combination_type="cat")`): the factors side by side, rank sum(r_i), scaling
  1: `A = [w_i (alpha_i/r_i) A_i]` stacked, `B = [B_i]` side by side, so the update is exactly
  `sum_i w_i (alpha_i/r_i) B_i A_i` (no rank is lost; the new adapter costs the sources' parameters together).
- "lora_delta_w_svd": the weighted sum of the updates `sum_i w_i (alpha/r) B_i A_i`, truncated to rank `svd_rank`
  by SVD. Where `svd_rank` differs from r, the `adapters` package rescales that sum by r / svd_rank (it drops the
  old alpha / r and applies the new one); here the averaged update is the weighted sum itself (the package's
  result when svd_rank == r).
- peft's TIES / DARE / magnitude pruning and their SVD forms: task_arithmetic.py.
"""

from __future__ import annotations

import torch

from .strategy import Strategy
from .task_arithmetic import STRATEGIES as TASK_ARITHMETIC


class NegateB(Strategy):
    """"lora_linear_only_negate_b": see the module docstring."""

    def __init__(self):
        super().__init__("lora_linear_only_negate_b")

    @torch.no_grad()
    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              options: dict) -> None:
        target = model.adapterkit[adapter_name]
        averaged = {}
        for key, value in target.state_dict().items():
            factors = [abs(w) if key.endswith("lora_A") else w for w in weights]
            dtype = torch.promote_types(value.dtype, torch.float32)  # bf16 / fp16 adapters summed in fp32
            averaged[key] = sum(f * source[key].to(dtype) for f, source in zip(factors, sources)).to(value)
        target.load_state_dict(averaged)


class DeltaSvd(Strategy):
    """"lora_delta_w_svd": see the module docstring."""

    def __init__(self):
        super().__init__("lora_delta_w_svd", accepts=("svd_rank",), requires=("svd_rank",))

    def config(self, config, names: list[str], options: dict):
        return super().config(config, names, options).replace(r=options["svd_rank"])

    def check(self, model, names: list[str], options: dict) -> None:
        self.check_rank(model, names, options["svd_rank"])

    @torch.no_grad()
    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              options: dict) -> None:
        state, rank = model.adapter_state, options["svd_rank"]
        for key, module in state.layer_modules(adapter_name):
            dtype = torch.promote_types(module.lora_A.dtype, torch.float32)
            delta = sum(w * state.module_at(n, key).delta_weight().to(dtype) for n, w in zip(names, weights))
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            module.lora_A.copy_(vh[:rank])
            module.lora_B.copy_(u[:, :rank] * s[:rank] / module.scaling)


class Concatenation(Strategy):
    """peft's "cat": see the module docstring."""

    def __init__(self):
        super().__init__("cat")

    def config(self, config, names: list[str], options: dict):
        config = super().config(config, names, options)
        total = config.r * len(names)  # average_adapter's sources share one config
        return config.replace(r=total, alpha=total, use_rslora=False)  # scaling 1: the sources' are in A

    @torch.no_grad()
    def apply(self, model, adapter_name: str, names: list[str], weights: list[float], sources: list[dict],
              options: dict) -> None:
        state = model.adapter_state
        for key, module in state.layer_modules(adapter_name):
            parts = [(w, state.module_at(n, key)) for n, w in zip(names, weights)]
            dtype = torch.promote_types(module.lora_A.dtype, torch.float32)
            module.lora_A.copy_(torch.cat([(w * m.scaling) * m.lora_A.to(dtype) for w, m in parts]))
            module.lora_B.copy_(torch.cat([m.lora_B.to(dtype) for _, m in parts], dim=1))


STRATEGIES = {s.name: s for s in (NegateB(), DeltaSvd(), Concatenation(), *TASK_ARITHMETIC)}
