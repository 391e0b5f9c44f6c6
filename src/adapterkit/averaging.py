"""`average_adapter`: a new adapter whose parameters combine those of adapters of one config.

Adapters of one config have the same modules, so the average is taken parameter by parameter over
`model.adapterkit[<name>]` — every method's modules alike — as the `adapters` package does ("linear"). A method
may add strategies of its own (`MethodSpec.averaging`: LoRA's "lora_linear_only_negate_b", "lora_delta_w_svd", "cat"
and peft's TIES / DARE / SVD combination types, in methods/lora/). Each strategy names the options it `accepts`
and `requires` (OPTIONS below); an option given to a strategy that does not take it is refused.
"""

from __future__ import annotations

import torch

from .blocks import named_weights
from .errors import AdapterError
from .registry import members, spec_for, specs
_IGNORED = ("dropout", "init_weights")  # fields the sources may differ in (as the package)
# the strategies' options and their defaults (a value other than the default counts as given)
OPTIONS = {"svd_rank": None, "density": None, "majority_sign_method": "total", "svd_clamp": None,
           "svd_full_matrices": True, "svd_driver": None}


def _signature(data):
    if isinstance(data, dict):
        return {k: _signature(v) for k, v in data.items() if k not in _IGNORED}
    if isinstance(data, list):
        return [_signature(v) for v in data]
    return data


def _weights(items, weights, normalize: bool) -> tuple[list[str], list[float]]:
    return named_weights("average_adapter", "adapter_list", "adapters", items, weights, normalize)


def _strategies() -> dict:
    """Every registered strategy: "linear" (None: generic) and each method's own."""
    out: dict = {"linear": None}
    for spec in specs():
        out.update(spec.averaging)
    return out


def _no_draws(model):
    """Leave torch's generators (CPU and the model's CUDA devices) as they were."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    return torch.random.fork_rng(devices=devices)


def _check_options(strategy: str, method, options: dict, known: dict) -> None:
    """Each given option is one `strategy` takes, and each it needs is given (generic "linear": none)."""
    accepts = method.accepts if method is not None else ()
    requires = method.requires if method is not None else ()
    for option, default in OPTIONS.items():
        given = not (options[option] is default or options[option] == default)
        users = [name for name, m in known.items() if m is not None and option in m.accepts]
        also = f"{option} goes with combine_strategy {', '.join(map(repr, users))}"
        if given and option not in accepts:
            raise AdapterError(f"{also}; {strategy!r} takes {', '.join(accepts) or 'no options'}")
        if not given and option in requires:
            raise AdapterError(f"combine_strategy {strategy!r} needs {option} ({also})")
    rank = options["svd_rank"]
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
        raise AdapterError(f"svd_rank={rank!r} must be a whole number")


def _config(model, names: list[str], strategy: str, options: dict):
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
    _check_options(strategy, method, options, known)
    if method is None:
        return config, None
    method.check(model, names, options)
    return method.config(config, names, options), method


@torch.no_grad()
def average_adapter(model, adapter_name: str, adapter_list, weights=None, combine_strategy: str = "linear",
                    normalize_weights: bool = True, overwrite_ok: bool = False, set_active: bool = False,
                    svd_rank: int | None = None, **options) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise AdapterError(f"average_adapter got unknown options {unknown}; allowed: {', '.join(OPTIONS)}")
    options = {**OPTIONS, **options, "svd_rank": svd_rank}
    names, weights = _weights(adapter_list, weights, normalize_weights)
    config, method = _config(model, names, combine_strategy, options)
    if adapter_name in names:
        raise AdapterError(f"average_adapter: the new adapter {adapter_name!r} cannot be one of its sources")
    sources = [{k: v.detach() for k, v in model.adapterkit[n].state_dict().items()} for n in names]
    with _no_draws(model):  # its initial weights are overwritten: a strategy's random draws come first
        model.add_adapter(adapter_name, config=config, overwrite_ok=overwrite_ok)
    if method is not None:
        method.apply(model, adapter_name, names, weights, sources, options)
    else:
        target = model.adapterkit[adapter_name]
        averaged = {}
        for key, value in target.state_dict().items():
            dtype = torch.promote_types(value.dtype, torch.float32)  # bf16 / fp16 adapters summed in fp32
            averaged[key] = sum(w * source[key].to(dtype) for w, source in zip(weights, sources)).to(value)
        target.load_state_dict(averaged)
    if set_active:
        model.set_active_adapters(adapter_name)
