"""LoRA and (IA)^3 on a mixture-of-experts module's fused 3D weight (nn/experts.py): one update per expert.

- LoRA: `W_e + s B_e A_e` for every expert e (A [E, r, in], B [E, out, r]), the semantics of peft's
  `target_parameters`; the adapted weight is what every expert computes with (sites/experts.py), so the output is
  exactly the base experts' with those weights, whichever experts kernel runs.
- (IA)^3: scaling an expert's outputs by `l_e` is scaling the rows of W_e (and its bias); scaling its inputs
  (`scale_inputs`, the paper's FFN scaling: the intermediate activation) is scaling the columns of its down
  projection. One vector per expert ([E, out] or [E, in]).

What needs a per-token input (dropout, gating, DoRA's and VeRA's forms, weight-based inits) is refused by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ...errors import AdapterError
from ...nn.experts import ExpertsTarget
from .config import LoRAConfig, location_group
from .modules import _ia3_vector

INITS = ("lora", "gaussian", "bert", "ia3")


def _refuse(name: str, target: ExpertsTarget, why: str) -> None:
    raise AdapterError(f"adapter {name!r} on the fused experts weight {type(target.module).__name__}.{target.name}: "
                       f"{why}")


def expert_module(name: str, config: LoRAConfig, location: str, target: ExpertsTarget, module_name: str):
    """The module for one experts parameter, or a clear refusal."""
    if config.is_vera or config.use_dora:
        _refuse(name, target, "VeRA and DoRA are for linear projections; LoRA and (IA)^3 adapt each expert")
    if config.use_gating:
        _refuse(name, target, "a gate depends on each token, and the adapted weight is shared by all tokens; "
                              "set use_gating=False")
    if config.dropout > 0:
        _refuse(name, target, "dropout on the input cannot be factored out of a weight update (as peft refuses "
                              "it); set dropout=0")
    if config.init_weights not in INITS:
        _refuse(name, target, f"init_weights={config.init_weights!r} is for linear projections; allowed: {INITS}")
    if config.composition_mode == "scale":
        if location_group(location) in config.scale_inputs:
            return ExpertIA3(target, config, inputs=True)
        return ExpertIA3(target, config, inputs=False)
    return ExpertLoRA(target, config, *config.rank_for(module_name))


class ExpertLoRA(nn.Module):
    """`W_e + (alpha / r) B_e A_e` for each expert e."""

    combine = None
    run_whole = None
    gate = None

    def __init__(self, target: ExpertsTarget, config: LoRAConfig, r: int, alpha: float):
        super().__init__()
        experts, out_f, in_f = target.num_experts, target.out_features, target.in_features
        self.scaling = config.scaling_of(r, alpha)
        self.lora_A = nn.Parameter(torch.empty(experts, r, in_f))
        self.lora_B = nn.Parameter(torch.empty(experts, out_f, r))
        with torch.no_grad():
            if config.init_weights == "lora":  # each A_e as an nn.Linear(in, r) weight, B zeros
                bound = 1 / math.sqrt(in_f)
                nn.init.uniform_(self.lora_A, -bound, bound)
                nn.init.zeros_(self.lora_B)
            elif config.init_weights == "gaussian":
                nn.init.normal_(self.lora_A, std=1 / r)
                nn.init.zeros_(self.lora_B)
            elif config.init_weights == "bert":
                nn.init.normal_(self.lora_A, std=0.02)
                nn.init.normal_(self.lora_B, std=0.02)
            else:  # "ia3"
                nn.init.ones_(self.lora_A)
                nn.init.ones_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """(E, out, in): `s B_e A_e`."""
        return torch.bmm(self.lora_B, self.lora_A) * self.scaling

    def adapt(self, target, weight: torch.Tensor, bias):
        return weight + self.delta_weight().to(weight.dtype), bias

    def routable(self) -> bool:
        return False

    def merge_into(self, target: ExpertsTarget) -> None:
        target.set(target.weight() + self.delta_weight().detach().to(target.parameter.dtype))


class ExpertIA3(nn.Module):
    """`alpha * l_e` on each expert's outputs (rows of W_e, and its bias), or with `inputs` on its inputs
    (columns of W_e)."""

    combine = None
    run_whole = None
    gate = None

    def __init__(self, target: ExpertsTarget, config: LoRAConfig, *, inputs: bool):
        super().__init__()
        self.scaling = config.scaling
        self.inputs = inputs
        size = target.in_features if inputs else target.out_features
        vector = _ia3_vector(target.num_experts * size, config).detach()
        self.ia3_l = nn.Parameter(vector.view(target.num_experts, size).clone())

    def vector(self) -> torch.Tensor:
        return self.ia3_l if self.scaling == 1.0 else self.ia3_l * self.scaling

    def adapt(self, target, weight: torch.Tensor, bias):
        v = self.vector().to(weight.dtype)
        if self.inputs:
            return weight * v[:, None, :], bias
        return weight * v[:, :, None], None if bias is None else bias * v.to(bias.dtype)

    def routable(self) -> bool:
        return False

    def merge_into(self, target: ExpertsTarget) -> None:
        weight, bias = self.adapt(target, target.weight(), target.bias())
        target.set(weight.detach(), None if bias is None else bias.detach())
