"""`average_adapter`: a new adapter whose parameters combine those of adapters of one config.

Adapters of one config have the same modules, so the average is taken parameter by parameter over
`model.adapterkit[<name>]` — bottlenecks, LoRA, (IA)^3, prefix MLPs, gates, invertible adapters and Compacter's
shared PHM rule alike — as the `adapters` package does ("linear"). LoRA has two more strategies:
"lora_linear_only_negate_b" (A weighted by |w|, B by w; Zhang et al., 2023) and "lora_delta_w_svd": the weighted
sum of the updates `sum_i w_i (alpha/r) B_i A_i`, truncated to rank `svd_rank` by SVD. Where `svd_rank` differs
from r, the package rescales that sum by r / svd_rank (it drops the old alpha / r and applies the new one); here the
averaged update is the weighted sum itself (the package's result when svd_rank == r).
"""

from __future__ import annotations

import torch

from .configs import AdapterConfig, LoRAConfig
from .errors import AdapterError
from .methods.lora import LoRA

STRATEGIES = ("linear", "lora_linear_only_negate_b", "lora_delta_w_svd")
_IGNORED = ("dropout", "init_weights")  # fields the sources may differ in (as the package)


def _signature(data):
    if isinstance(data, dict):
        return {k: _signature(v) for k, v in data.items() if k not in _IGNORED}
    if isinstance(data, list):
        return [_signature(v) for v in data]
    return data


def _weights(adapter_list, weights, normalize: bool) -> tuple[list[str], list[float]]:
    if isinstance(adapter_list, dict):
        if weights is not None:
            raise AdapterError("average_adapter: give the weights either in adapter_list (a dict) or in weights")
        names, weights = list(adapter_list), list(adapter_list.values())
    else:
        names = list(adapter_list)
    if not names:
        raise AdapterError("average_adapter needs at least one adapter to average")
    if weights is None:
        return names, [1.0 / len(names)] * len(names)
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise AdapterError(f"average_adapter: {len(weights)} weights for {len(names)} adapters {names}")
    if normalize:
        total = sum(weights)
        if total == 0:
            raise AdapterError(f"average_adapter: the weights {weights} sum to 0 and cannot be normalised; pass "
                               "normalize_weights=False")
        weights = [w / total for w in weights]
    return names, weights


def _config(model, names: list[str], strategy: str, svd_rank) -> AdapterConfig:
    configs = [model.adapter_state.require(n) for n in names]
    first = _signature(configs[0].to_dict())
    for name, config in zip(names[1:], configs[1:]):
        if _signature(config.to_dict()) != first:
            raise AdapterError(f"average_adapter: {name!r} has another config than {names[0]!r}; only adapters of "
                               f"one config (up to {', '.join(_IGNORED)}) can be averaged")
    config = configs[0]
    if strategy not in STRATEGIES:
        raise AdapterError(f"unknown combine_strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    is_lora = isinstance(config, LoRAConfig) and config.composition_mode == "add"
    if strategy != "linear" and not is_lora:
        raise AdapterError(f"combine_strategy {strategy!r} is for LoRA adapters; {names[0]!r} is a "
                           f"{config.architecture} adapter{' ((IA)^3)' if isinstance(config, LoRAConfig) else ''}: "
                           "use 'linear'")
    if strategy != "linear" and config.use_gating:
        raise AdapterError(f"combine_strategy {strategy!r} averages LoRA's A and B only; gated LoRA adapters can be "
                           "averaged with 'linear'")
    if (strategy == "lora_delta_w_svd") != (svd_rank is not None):
        raise AdapterError("svd_rank goes with combine_strategy='lora_delta_w_svd' (and that strategy needs it)")
    if svd_rank is not None and (isinstance(svd_rank, bool) or not isinstance(svd_rank, int)):
        raise AdapterError(f"svd_rank={svd_rank!r} must be a whole number")
    return config.replace(r=svd_rank) if svd_rank is not None else config


@torch.no_grad()
def average_adapter(model, adapter_name: str, adapter_list, weights=None, combine_strategy: str = "linear",
                    normalize_weights: bool = True, overwrite_ok: bool = False, set_active: bool = False,
                    svd_rank: int | None = None) -> None:
    names, weights = _weights(adapter_list, weights, normalize_weights)
    config = _config(model, names, combine_strategy, svd_rank)
    if adapter_name in names:
        raise AdapterError(f"average_adapter: the new adapter {adapter_name!r} cannot be one of its sources")
    if svd_rank is not None:
        modules = [m for _, m in model.adapter_state.layer_modules(names[0]) if isinstance(m, LoRA)]
        smallest = min((min(m.lora_A.shape[1], m.lora_B.shape[0]) for m in modules), default=svd_rank)
        if not 1 <= svd_rank <= smallest:
            raise AdapterError(f"svd_rank={svd_rank} must be between 1 and {smallest} (the smallest side of the "
                               "projections these adapters update)")
    sources = [{k: v.detach() for k, v in model.adapterkit[n].state_dict().items()} for n in names]
    model.add_adapter(adapter_name, config=config, overwrite_ok=overwrite_ok)
    target = model.adapterkit[adapter_name]
    if combine_strategy == "lora_delta_w_svd":
        _svd(model, adapter_name, names, weights, svd_rank)
    else:
        negate_b = combine_strategy == "lora_linear_only_negate_b"
        averaged = {}
        for key, value in target.state_dict().items():
            factors = [abs(w) if negate_b and key.endswith("lora_A") else w for w in weights]
            dtype = torch.promote_types(value.dtype, torch.float32)  # bf16 / fp16 adapters summed in fp32
            averaged[key] = sum(f * source[key].to(dtype) for f, source in zip(factors, sources)).to(value)
        target.load_state_dict(averaged)
    if set_active:
        model.set_active_adapters(adapter_name)


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
