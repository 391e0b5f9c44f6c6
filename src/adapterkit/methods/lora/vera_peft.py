"""The PEFT format's VeRA (peft_type "VERA"), part of this method's PEFT map (peft.py). Semantics, checked:

- peft computes `out + b * (B[:out] (d * (A[:, :in] x)))` with one `vera_A` (r, in_max) / `vera_B` (out_max, r)
  pair sized to the largest targeted module: ours with alpha / r = 1. Its vectors are ours under the same names.
- The pair is saved as `base_model.vera_A` / `vera_B` (save_projection=True, peft's default) or regenerated from
  `projection_prng_key` (peft's generator and Kaiming bound, so bit for bit); both load here.
- Export folds alpha / r into b (peft has no scaling) and always saves the pair. A gated VeRA has no peft form.
- On a fused projection (GPT-2's c_attn) peft's VeRA is one update over all parts with one d: refused both ways
  (io/peft.py), as for LoRA.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch

from ...configs.module_targets import checkpoint_key
from ...errors import AdapterConfigError, CheckpointError
from .build import locations_of
from .config import LoRAConfig, VeraConfig
from .targets import vera_size
from .vera import SHARED_KEY, largest

PARAMS = {"vera_lambda_d": "vera_lambda_d", "vera_lambda_b": "vera_lambda_b"}
MODEL_LEVEL = ("vera_A", "vera_B")


def read(source: Path, data: Mapping[str, Any], sites: dict, targets: dict):
    if data.get("bias", "none") != "none":
        raise CheckpointError(f"{source}: PEFT VeRA bias={data['bias']!r} (trained base-model biases) is not "
                              "supported; allowed: 'none'")
    r = data.get("r")
    fields = dict(targets, r=r, alpha=r, dropout=data.get("vera_dropout", 0.0),
                  vera_d=data.get("d_initial", 0.1), vera_b=0.0)
    tensors = {checkpoint_key(i, loc, p): t for (i, loc), params in sites.items() for p, t in params.items()}
    return VeraConfig, fields, tensors


def _kaiming(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """peft's `_kaiming_init`: U(-b, b), b = sqrt(3) sqrt(2) / sqrt(fan_in), drawn from `generator`."""
    bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def complete_read(model, source: Path, data: Mapping[str, Any], config: LoRAConfig, model_level: dict,
                  tensors: dict) -> dict:
    """The adapter's tensors plus its frozen pair, cut to the size adapterkit builds (the largest targeted
    projection: peft's own size when it targets the same modules)."""
    if not config.is_vera:
        if model_level:
            raise CheckpointError(f"{source}: PEFT {data.get('peft_type')} weights hold model-level tensors "
                                  f"({', '.join(sorted(model_level))}), which only VeRA has")
        return tensors
    state = model.adapter_state
    if config.target_modules is not None:
        in_max, out_max = vera_size(model, config)
    else:
        in_max, out_max = largest(p for _, _, p in state.projections(locations_of(state, config), config.leave_out))
    if set(model_level) == set(MODEL_LEVEL):
        a, b = model_level["vera_A"], model_level["vera_B"]
    elif not model_level:
        key = data.get("projection_prng_key", 0)
        if isinstance(key, bool) or not isinstance(key, int):
            raise CheckpointError(f"{source}: PEFT VeRA projection_prng_key={key!r} must be an integer")
        generator = torch.Generator(device="cpu").manual_seed(key)
        a = _kaiming((config.r, in_max), generator)
        b = _kaiming((out_max, config.r), generator)
    else:
        raise CheckpointError(f"{source}: the PEFT VeRA weights hold {', '.join(sorted(model_level))} but not both "
                              "of vera_A and vera_B")
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != config.r or b.shape[1] != config.r \
            or a.shape[1] < in_max or b.shape[0] < out_max:
        raise CheckpointError(f"{source}: PEFT VeRA vera_A {tuple(a.shape)} / vera_B {tuple(b.shape)} do not fit "
                              f"r={config.r} and the targeted projections (in <= {in_max}, out <= {out_max})")
    prefix = f"shared.{SHARED_KEY}."
    return {**tensors, prefix + "vera_A": a[:, :in_max].contiguous(), prefix + "vera_B": b[:out_max].contiguous()}


def module_tensors(module) -> dict:
    """peft's vectors; alpha / r folded into b."""
    return {"vera_lambda_d": module.vera_lambda_d.detach(),
            "vera_lambda_b": (module.vera_lambda_b * module.scaling).detach()}


def model_level_tensors(state, name: str, config: LoRAConfig) -> dict:
    if not config.is_vera:
        return {}
    shared = state.container[name].shared[SHARED_KEY]
    return {"base_model.vera_A": shared.vera_A.detach(), "base_model.vera_B": shared.vera_B.detach()}


def peft_config(config: LoRAConfig, common: dict) -> dict:
    if config.use_dora:
        raise AdapterConfigError("DvoRA (VeRA with use_dora=True) has no PEFT form (peft's VeRA has no magnitude); "
                                 "save it as format='adapterkit'")
    if config.use_gating:
        raise AdapterConfigError("a gated VeRA (use_gating=True) has no PEFT form (peft's VeRA has no gate); save "
                                 "it as format='adapterkit'")
    return {"peft_type": "VERA", "r": config.r, "vera_dropout": config.dropout, "d_initial": config.vera_d,
            "projection_prng_key": 0, "save_projection": True, "bias": "none", "init_weights": True,
            "layers_to_transform": None, "layers_pattern": None, **common}
