"""peft's LoRA initialisations that change the base weight: PiSSA ("pissa", "pissa_niter_<N>") and OLoRA ("olora").

Both set B A to a rank-r part of the weight W itself and replace W by the residual `W - s B A`, so the model's
output is unchanged at the start while training moves the principal part (PiSSA: B A from the r largest singular
triplets, split as sqrt(S); with `_niter_<N>`, torch.svd_lowrank with N subspace iterations, which draws from the
global RNG as peft does; OLoRA: B, A = the first r columns / rows of W = Q R). The arithmetic follows peft's
`pissa_init` / `olora_init` op for op (in float32, in the (out, in) orientation of `Projection`, which peft's OLoRA
skips for Conv1D), so one weight gives the same factors and residual.

The residual is written through `Projection.set` while the generic build records the rows written
(registry.build, merge_snapshot.py): deleting the adapter writes the original rows back bit for bit. The initial
factors stay on the module (`lora_A_init`, `lora_B_init`, not saved) for `convert_to_plain_lora`: the trained
adapter relative to the original W is `s (B A - B0 A0)`, a plain LoRA of rank 2r (peft's
`path_initial_model_for_weight_conversion`).
"""

from __future__ import annotations

import math
import re

import torch

from ...errors import AdapterConfigError, AdapterError

PLAIN = ("lora", "bert", "ia3", "gaussian", "orthogonal", "vera")
BASE_CHANGING = ("pissa", "pissa_niter_<N>", "olora")


def changes_base(init_weights: str) -> bool:
    return init_weights == "olora" or init_weights.startswith("pissa")


def check_init(config) -> None:
    """`init_weights` is a plain init, "pissa", "olora" or "pissa_niter_<N>" with N an integer >= 1."""
    value, name = config.init_weights, type(config).__name__
    allowed = ", ".join(map(repr, PLAIN + BASE_CHANGING))
    if not isinstance(value, str) or not (value in PLAIN or value in ("pissa", "olora")
                                          or value.startswith("pissa_niter_")):
        raise AdapterConfigError(f"{name}.init_weights={value!r} is not allowed; allowed values: {allowed}")
    if value.startswith("pissa_niter_") and not re.fullmatch(r"pissa_niter_[1-9]\d*", value):
        raise AdapterConfigError(f"{name}.init_weights={value!r}: the number of subspace iterations after "
                                 "'pissa_niter_' must be an integer >= 1 (e.g. 'pissa_niter_4')")
    if changes_base(value) and config.composition_mode != "add":
        raise AdapterConfigError(f"{name}: init_weights={value!r} is a LoRA init (composition_mode='add')")
    if changes_base(value) and config.use_gating:
        raise AdapterConfigError(f"{name}: init_weights={value!r} makes the base weight W - s B A, which only a "
                                 "fixed scaling s gives back; use_gating=True replaces s by a gate")


@torch.no_grad()
def initialise(module, projection, init_weights: str) -> None:
    """Set the module's A and B from the projection's weight and write the residual into the base (skipped when the
    module has no storage: a checkpoint's dry run builds on the meta device)."""
    if module.lora_A.is_meta:
        return
    r, s = module.lora_A.shape[0], module.scaling
    if r > min(projection.in_features, projection.out_features):
        raise AdapterError(f"init_weights={init_weights!r} needs r <= min(in, out) of each projection; r={r} on a "
                           f"{projection.out_features} x {projection.in_features} weight")
    weight = projection.weight()
    dtype = weight.dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise AdapterError(f"init_weights={init_weights!r} needs a float32, float16 or bfloat16 base weight, "
                           f"found {dtype}")
    w = weight.to(torch.float32)
    if init_weights == "olora":
        q, rr = torch.linalg.qr(w)
        lora_a, lora_b = rr[:r].contiguous(), q[:, :r].contiguous()
    else:
        if init_weights == "pissa":
            v, sv, uh = torch.linalg.svd(w, full_matrices=False)
            vr, sr, uhr = v[:, :r], sv[:r], uh[:r]
        else:
            vr, sr, ur = torch.svd_lowrank(w, r, niter=int(init_weights.rsplit("_", 1)[1]))
            uhr = ur.t()
        sr = sr / s
        lora_a = torch.diag(torch.sqrt(sr)) @ uhr
        lora_b = vr @ torch.diag(torch.sqrt(sr))
    residual = w - s * lora_b @ lora_a
    module.lora_A.copy_(lora_a)
    module.lora_B.copy_(lora_b)
    module.register_buffer("lora_A_init", module.lora_A.detach().clone(), persistent=False)
    module.register_buffer("lora_B_init", module.lora_B.detach().clone(), persistent=False)
    projection.set(residual.to(dtype))


def plain_config(config):
    """The plain LoRA config equal to a base-changing one relative to the original weight: rank 2r (A0 and B0
    appended), alpha scaled so the scaling stays (peft's conversion)."""
    factor = math.sqrt(2) if config.use_rslora else 2
    return config.replace(init_weights="lora", r=2 * config.r, alpha=factor * config.alpha,
                          rank_pattern={k: 2 * v for k, v in config.rank_pattern.items()},
                          alpha_pattern={k: factor * v for k, v in config.alpha_pattern.items()})


def convert_to_plain_lora(state, name: str) -> None:
    """Replace the PiSSA / OLoRA adapter `name` by the equal plain LoRA on the original base weights (restored
    bit for bit): `[A; A0]`, `[B, -B0]`, rank 2r. The outputs stay equal up to float rounding; the adapter then
    saves in any format and loads on an unmodified model (the `adapters` package's included)."""
    model, config = state.model, state.require(name)
    if config.method != "lora" or not changes_base(config.init_weights):
        raise AdapterError(f"adapter {name!r} has init_weights={getattr(config, 'init_weights', None)!r}; only "
                           "adapters whose init changed the base weights (pissa, pissa_niter_<N>, olora) convert")
    if name in state.merged:
        raise AdapterError(f"adapter {name!r} is merged; reset_adapter({name!r}) before converting it")
    tensors = {}
    for (layer_id, location), module in state.layer_modules(name):
        key = f"layers.{layer_id}.{location}"
        tensors[f"{key}.lora_A"] = torch.cat([module.lora_A.detach(), module.lora_A_init.to(module.lora_A)])
        tensors[f"{key}.lora_B"] = torch.cat([module.lora_B.detach(), -module.lora_B_init.to(module.lora_B)], dim=1)
    entry = state.container[name]
    trainable = any(p.requires_grad for p in entry.parameters())
    training, active = entry.training, state.active
    model.delete_adapter(name)  # restores the original base weights
    model.add_adapter(name, config=plain_config(config))
    model.adapterkit[name].load_state_dict(tensors, strict=True)
    model.adapterkit[name].requires_grad_(trainable).train(training)
    if active is not None and name in active.flatten():
        model.set_active_adapters(active)
