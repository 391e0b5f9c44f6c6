"""`average_adapter`: a new adapter whose parameters combine those of adapters of one config.

Adapters of one config have the same modules, so the average is taken parameter by parameter over
`model.adapterkit[<name>]` — every method's modules alike — as the `adapters` package does ("linear"). A method
may add strategies of its own (`MethodSpec.averaging`: LoRA's "lora_linear_only_negate_b" and "lora_delta_w_svd",
in methods/lora/averaging.py); `svd_rank` is the option of those that truncate to a rank.
"""

from __future__ import annotations

import torch

from .blocks import mixing_weights
from .errors import AdapterError
from .registry import members, spec_for, specs
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
    return names, mixing_weights("average_adapter", weights, len(names), normalize or weights is None,
                                 f"average_adapter: {{n}} weights for {len(names)} adapters {names}")


def _strategies() -> dict:
    """Every registered strategy: "linear" (None: generic) and each method's own."""
    out: dict = {"linear": None}
    for spec in specs():
        out.update(spec.averaging)
    return out


def _config(model, names: list[str], strategy: str, svd_rank):
    """(the new adapter's config, the method's strategy or None for "linear")."""
    configs = [model.adapter_state.require(n) for n in names]
    first = _signature(configs[0].to_dict())
    for name, config in zip(names[1:], configs[1:]):
        if _signature(config.to_dict()) != first:
            raise AdapterError(f"average_adapter: {name!r} has another config than {names[0]!r}; only adapters of "
                               f"one config (up to {', '.join(_IGNORED)}) can be averaged")
    config = configs[0]
    known = _strategies()
    if strategy not in known:
        raise AdapterError(f"unknown combine_strategy {strategy!r}; allowed: {', '.join(known)}")
    method = None
    if strategy != "linear":
        owned = len(members(config)) == 1 and strategy in spec_for(config).averaging
        method = known[strategy]
        if not owned:
            raise AdapterError(f"combine_strategy {strategy!r} is for {method.applies_to} adapters; {names[0]!r} is "
                               f"a {config.method} adapter: use 'linear'")
    takes_rank = method is not None and method.takes_rank
    if takes_rank != (svd_rank is not None):
        raise AdapterError("svd_rank goes with combine_strategy='lora_delta_w_svd' (and that strategy needs it)")
    if svd_rank is not None and (isinstance(svd_rank, bool) or not isinstance(svd_rank, int)):
        raise AdapterError(f"svd_rank={svd_rank!r} must be a whole number")
    return (config if method is None else method.config(config, names, svd_rank)), method


@torch.no_grad()
def average_adapter(model, adapter_name: str, adapter_list, weights=None, combine_strategy: str = "linear",
                    normalize_weights: bool = True, overwrite_ok: bool = False, set_active: bool = False,
                    svd_rank: int | None = None) -> None:
    names, weights = _weights(adapter_list, weights, normalize_weights)
    config, method = _config(model, names, combine_strategy, svd_rank)
    if adapter_name in names:
        raise AdapterError(f"average_adapter: the new adapter {adapter_name!r} cannot be one of its sources")
    if svd_rank is not None:
        method.check_rank(model, names, svd_rank)
    sources = [{k: v.detach() for k, v in model.adapterkit[n].state_dict().items()} for n in names]
    model.add_adapter(adapter_name, config=config, overwrite_ok=overwrite_ok)
    if method is not None:
        method.apply(model, adapter_name, names, weights, sources, svd_rank)
    else:
        target = model.adapterkit[adapter_name]
        averaged = {}
        for key, value in target.state_dict().items():
            dtype = torch.promote_types(value.dtype, torch.float32)  # bf16 / fp16 adapters summed in fp32
            averaged[key] = sum(w * source[key].to(dtype) for w, source in zip(weights, sources)).to(value)
        target.load_state_dict(averaged)
    if set_active:
        model.set_active_adapters(adapter_name)

