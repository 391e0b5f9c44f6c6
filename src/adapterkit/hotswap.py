"""Hot-swapping: replace an adapter's weights in place, so that a model compiled with torch.compile keeps its graph.

Why in place: a compiled graph takes the adapter's parameters as inputs and guards on their identity, shape and the
Python attributes the forward reads. `tensor.copy_` changes values only, so the next call runs the same graph;
`add_adapter` / `delete_adapter` (new modules, a new plan) make dynamo trace the model again. What a method must do
beyond copying (LoRA: zero-pad a lower rank, write alpha / r into a tensor) it says through `MethodSpec.hotswap`
(registry.py); a method without one swaps tensors of exactly the same shapes (bottleneck adapters, prompts, ...).

Everything is read and checked before the first write: on any error the adapter is exactly as before.
"""

from __future__ import annotations

import json
import os
import weakref
from typing import Mapping

import torch

from . import io
from .configs import AdapterConfig, resolve_config
from .errors import AdapterError
from .io import hub
from .io.validate import expected_modules, fit_problems, short_list
from .registry import member_specs, members

# fields that only say how a module starts: once its weights are replaced they no longer matter
FREE_FIELDS = frozenset({"init_weights", "init_weights_seed"})
_DRY_RUNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # state -> {config JSON: what it builds}
_DRY_RUNS_KEPT = 16


def prepare_for_hotswap(model, name: str, max_rank: int | None = None) -> None:
    """Make adapter `name` ready for swaps while compiled: every method with a hot-swap hook turns what the forward
    reads as Python numbers into tensors, and pads ranks to `max_rank` (zeros: the outputs are unchanged). Call it
    before `torch.compile`: it replaces parameters by larger ones once."""
    state = model.adapter_state
    config = state.require(name)
    if max_rank is not None and (isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1):
        raise AdapterError(f"max_rank must be an integer >= 1 (or None: keep the ranks), got {max_rank!r}")
    hooks = [(member, spec.hotswap) for member, spec in member_specs(config) if spec.hotswap is not None]
    if max_rank is not None and not hooks:
        raise AdapterError(f"adapter {name!r} ({_methods(config)}) has no rank to pad: only methods with a rank "
                           "(LoRA, DoRA) take max_rank; its tensors swap at their own shapes without preparing")
    for member, hook in hooks:
        hook.check_prepare(state, name, member, max_rank)
    for member, hook in hooks:
        hook.prepare(state, name, member, max_rank)


def hotswap_adapter(model, name: str, source, config=None, format: str | None = None, **hub_options) -> None:
    """Replace adapter `name`'s weights with those of `source` in place (`tensor.copy_`, no new parameters).

    `source`: a saved adapter directory (adapterkit, AdapterHub or PEFT format, `format` to insist on one) or a Hub
    repo id (`hub_options` as load_adapter), or a state dict keyed as `model.adapterkit[name].state_dict()` with
    its `config` (default: the adapter's own). The new adapter must be of the same kind: same method, same targeted
    modules, same config except what the method lets differ (LoRA: r up to the current rank, alpha,
    rank_pattern, alpha_pattern, use_rslora; dropout, a training setting, stays the adapter's). Afterwards the
    adapter's config is the new one.
    """
    state = model.adapter_state
    old = state.require(name)
    if name in state.merged:
        raise AdapterError(f"cannot hot-swap {name!r}: it is merged into the base weights; reset_adapter({name!r}) "
                           "first (a swap would leave the old weights merged)")
    new, tensors, where = _incoming(model, source, old, config, format, hub_options)
    _check_kind(name, old, new, where)
    for (old_member, spec), new_member in zip(member_specs(old), members(new)):
        free = FREE_FIELDS | frozenset(getattr(spec.hotswap, "free_fields", ()))
        _check_fields(name, old_member, new_member, free, where)
    modules = state.container[name]
    expected_tensors, expected_types = _expected(state, name, new, where)
    targets = _targets(modules)
    problems = fit_problems(tensors, expected_tensors) + _module_problems(modules, expected_types, tensors, targets)
    if problems:
        raise AdapterError(f"cannot hot-swap {name!r} from {where}: it does not fit ({'; '.join(problems)})")
    values, actions, recorded = {}, [], []
    for (old_member, spec), new_member in zip(member_specs(old), members(new)):
        hook = spec.hotswap
        if hook is None:
            recorded.append(new_member)
            continue
        plan = hook.plan(state, name, old_member, new_member, tensors, where)
        values.update(plan.values)
        actions.extend(plan.actions)
        recorded.append(plan.config)
    for key, tensor in tensors.items():  # the rest: the same shapes, copied as they are
        values.setdefault(key, tensor)
    wrong = [f"{k} has shape {tuple(v.shape)}, the adapter's is {tuple(targets[k].shape)}"
             for k, v in values.items() if v.shape != targets[k].shape]
    if wrong:
        raise AdapterError(f"cannot hot-swap {name!r} from {where}: wrong shapes ({short_list(wrong, sort=False)}); "
                           "a swap keeps every tensor's shape (LoRA: prepare_for_hotswap(name, max_rank=...) pads "
                           "ranks)")
    # nothing is written before this line
    with torch.no_grad():
        for key, value in values.items():
            targets[key].copy_(value)
    for action in actions:
        action()
    state.configs[name] = type(new)(*recorded) if len(members(new)) > 1 else recorded[0]


def _incoming(model, source, old: AdapterConfig, config, format, hub_options) -> tuple[AdapterConfig, dict, str]:
    """(config, tensors keyed as the adapter's state dict, how to name the source in errors)."""
    if isinstance(source, Mapping):
        if format is not None or hub_options:
            raise AdapterError("format and Hub options are for a checkpoint directory; a state dict takes config= only")
        bad = [str(k) for k, v in source.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise AdapterError(f"a hot-swap state dict maps parameter names to tensors; not so: {short_list(bad)}")
        return (old if config is None else resolve_config(config)), dict(source), "the state dict"
    if isinstance(source, (str, os.PathLike)):
        if config is not None:
            raise AdapterError("config= is for a state dict; a checkpoint directory brings its own config")
        ckpt = io.read_checkpoint(model, hub.resolve_path(source, **hub_options), format)
        return ckpt.config, ckpt.tensors, str(ckpt.weights_file)
    raise AdapterError(f"hotswap_adapter takes a checkpoint directory (a path or Hub repo id) or a state dict "
                       f"(name -> tensor), got {type(source).__name__}")


def _methods(config: AdapterConfig) -> str:
    return " + ".join(m.method for m in members(config))


def _check_kind(name: str, old: AdapterConfig, new: AdapterConfig, where: str) -> None:
    if [m.method for m in members(old)] != [m.method for m in members(new)]:
        raise AdapterError(f"cannot hot-swap {name!r}: it is a {_methods(old)} adapter and {where} holds a "
                           f"{_methods(new)} one; a swap replaces weights within one kind of adapter (load another "
                           "kind with load_adapter)")


def _check_fields(name: str, old: AdapterConfig, new: AdapterConfig, free: frozenset, where: str) -> None:
    a, b = old.to_dict(), new.to_dict()
    differ = [f"{k}={b.get(k)!r} (the adapter has {a.get(k)!r})" for k in sorted(set(a) | set(b))
              if k not in free and a.get(k) != b.get(k)]
    if differ:
        allowed = ", ".join(sorted(free))
        raise AdapterError(f"cannot hot-swap {name!r} from {where}: its {new.method} config differs in "
                           f"{short_list(differ, sort=False)}; a swap may change only {allowed} (add it as another "
                           "adapter instead)")


def _expected(state, name: str, config: AdapterConfig, where: str) -> tuple[dict, dict]:
    """(state dict on the meta device, module path -> type) of what `config` builds: a dry run (io/validate.py),
    kept per config for the model, since a serving loop swaps among few configs and the dry run is most of a
    swap's time (48 ms of 78 on a Llama-shaped model on CPU)."""
    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    cache = _DRY_RUNS.setdefault(state, {})
    if key not in cache:
        try:
            built = expected_modules(state, name, config)
        except AdapterError as e:
            raise AdapterError(f"{where}: its config does not fit this model: {e}") from None
        if len(cache) >= _DRY_RUNS_KEPT:
            cache.pop(next(iter(cache)))
        cache[key] = (built.state_dict(), {path: type(m) for path, m in built.named_modules()})
    return cache[key]


def _module_problems(modules, expected_types, tensors: Mapping, targets: Mapping) -> list[str]:
    """What the adapter and the incoming one do not share: weights one has and the other lacks (other targets), and
    modules of another kind at the same place (LoRA where DoRA was: their keys may agree, their math does not)."""
    out = []
    extra, lacking = set(tensors) - set(targets), set(targets) - set(tensors)
    if extra:
        out.append(f"weights the adapter does not have: {short_list(extra)}")
    if lacking:
        out.append(f"weights of the adapter it lacks: {short_list(lacking)}")
    have = dict(modules.named_modules())
    wrong = [f"{path or 'the adapter'} is a {kind.__name__}, the adapter's a {type(have[path]).__name__}"
             for path, kind in expected_types.items() if path in have and type(have[path]) is not kind]
    if wrong:
        out.append(f"other modules: {short_list(wrong, sort=False)}")
    return out


def _targets(modules) -> dict[str, torch.Tensor]:
    """State-dict key -> the live tensor (parameters and persistent buffers, shared ones under every name)."""
    out = {k: v for k, v in modules.named_parameters(remove_duplicate=False)}
    for path, module in modules.named_modules(remove_duplicate=False):
        for key, buffer in module._buffers.items():
            if buffer is not None and key not in module._non_persistent_buffers_set:
                out[f"{path}.{key}" if path else key] = buffer
    return out
