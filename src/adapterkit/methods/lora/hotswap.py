"""Hot-swapping LoRA, DoRA, (IA)^3 and VeRA adapters (the generic part, and why in place: adapterkit/hotswap.py).

Two things a compiled graph bakes in that differ between adapters of one config family: the rank (the shapes of A
and B) and the scaling (alpha / r, a Python float the forward reads and dynamo guards on). `prepare` pads A (r, in)
and B (out, r) with zeros to `max_rank` (the padded rows and columns add exactly zero) and moves every module's
scaling into a 0-dim buffer, not saved. A swap then writes a lower-rank adapter into the leading rows / columns,
zeroes the rest and fills the scaling buffer: the same graph computes the new adapter.

The rank each module really holds is kept in its `__dict__` (nothing the forward reads) and a state-dict hook
trims A and B to it, so `save_adapter` writes exactly the adapter that was swapped in, loadable anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch

from ...errors import AdapterError
from .config import LoRAConfig
from .dvora import DvoRA
from .init import changes_base
from .modules import IA3, IA3Input, LoRA
from .vera import Vera

# r and alpha (and what derives alpha / r) only change the scaling and how much of the padded rank is used;
# dropout is a training setting: the adapter keeps its own (its dropout modules stay)
free_fields = ("r", "alpha", "rank_pattern", "alpha_pattern", "use_rslora", "dropout", "vera_d", "vera_b")
_RANK = "_hotswap_rank"       # module.__dict__: the rank in use where A / B are padded beyond it
_HOOKED = "_hotswap_trims"   # module.__dict__: the state-dict hook that trims to that rank is registered
_OWN = (LoRA, IA3, IA3Input, Vera, DvoRA)  # (DoRA is a LoRA)


@dataclass
class Plan:
    """What a swap writes: full-shape values by state-dict key, then `actions` (scalings, ranks), then `config`."""

    values: dict
    actions: list
    config: LoRAConfig


def _modules(state, name: str):
    """(state-dict prefix, module, the Projection it adapts) of every module of this method in adapter `name` (a
    union's other members have theirs beside them)."""
    for (layer_id, location), module in state.layer_modules(name):
        if isinstance(module, _OWN):
            yield f"layers.{layer_id}.{location}", module, state.sites[(layer_id, location)].target


def _refuse_base_changing(name: str, *configs: LoRAConfig) -> None:
    for config in configs:
        if changes_base(config.init_weights):
            raise AdapterError(f"cannot hot-swap {name!r}: init_weights={config.init_weights!r} changed the base "
                               "weights, which a swap would have to rewrite; convert_to_plain_lora(...) the adapter "
                               "(and save it) first")


def check_prepare(state, name: str, config: LoRAConfig, max_rank: int | None) -> None:
    _refuse_base_changing(name, config)
    if max_rank is None:
        return
    if config.composition_mode != "add" or config.is_vera:
        kind = "(IA)^3" if config.composition_mode != "add" else "VeRA (its rank is that of the shared frozen pair)"
        raise AdapterError(f"adapter {name!r} is {kind}: it has no rank to pad; call prepare_for_hotswap({name!r}) "
                           "without max_rank")
    above = [f"{prefix} (r={module.lora_A.shape[0]})" for prefix, module, _ in _modules(state, name)
             if "lora_A" in module._parameters and module.lora_A.shape[0] > max_rank]
    if above:
        raise AdapterError(f"adapter {name!r}: max_rank={max_rank} is below the rank it has at "
                           f"{_few(above)}; choose a max_rank >= its largest rank")


def prepare(state, name: str, config: LoRAConfig, max_rank: int | None) -> None:
    """Pad A / B to `max_rank` (new, larger parameters: before compiling) and put each scaling into a tensor."""
    for _, module, _ in _modules(state, name):
        lora_a = module._parameters.get("lora_A")
        if max_rank is not None and lora_a is not None and lora_a.shape[0] < max_rank:
            rank, lora_b = lora_a.shape[0], module.lora_B
            with torch.no_grad():
                module.lora_A = torch.nn.Parameter(_padded(lora_a, 0, max_rank), requires_grad=lora_a.requires_grad)
                module.lora_B = torch.nn.Parameter(_padded(lora_b, 1, max_rank), requires_grad=lora_b.requires_grad)
            _set_rank(module, rank)
        _scaling_to_tensor(module)


def plan(state, name: str, old: LoRAConfig, new: LoRAConfig, tensors: dict, source: str) -> Plan:
    """The padded values and scalings of `new` for every module; an error (nothing written) for a rank above a
    module's current one."""
    _refuse_base_changing(name, old, new)
    names = {id(m): n for n, m in state.model.named_modules()} if new.alpha_pattern else {}  # (rank_for's keys)
    values, actions, above = {}, [], []
    for prefix, module, projection in _modules(state, name):
        scaling = new.scaling
        if "lora_A" in module._parameters:
            key_a, key_b = prefix + ".lora_A", prefix + ".lora_B"
            rank, cap = tensors[key_a].shape[0], module.lora_A.shape[0]
            if rank > cap:
                above.append(f"{key_a} has rank {rank}, the maximum there is {cap}")
                continue
            values[key_a], values[key_b] = _padded(tensors[key_a], 0, cap), _padded(tensors[key_b], 1, cap)
            scaling = new.scaling_of(rank, new.rank_for(names.get(id(projection.module), ""))[1])
            if rank != cap or _RANK in module.__dict__:
                actions.append(partial(_set_rank, module, rank))
        actions.append(partial(_set_scaling, module, scaling))
    if above:
        raise AdapterError(f"cannot hot-swap {name!r} from {source}: rank above the maximum "
                           f"({_few(above)}); prepare_for_hotswap({name!r}, max_rank=<the largest "
                           "rank to serve>) before compiling pads every LoRA of the adapter to that rank")
    return Plan(values, actions, replace(new, dropout=old.dropout))


def _few(items: list[str], most: int = 4) -> str:
    return ", ".join(items[:most]) + (f", ... ({len(items)} in all)" if len(items) > most else "")


def _padded(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`tensor` with zeros appended along `dim` up to `size`."""
    if tensor.shape[dim] == size:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = size
    out = tensor.new_zeros(shape)
    out.narrow(dim, 0, tensor.shape[dim]).copy_(tensor)
    return out


def _scaling_to_tensor(module) -> None:
    """The Python float `scaling` as a 0-dim buffer (not saved) on the module's device: dynamo then reads it as a
    graph input instead of guarding on its value."""
    value = module.__dict__.get("scaling")
    if not isinstance(value, (int, float)):
        return
    param = next(module.parameters())
    del module.__dict__["scaling"]
    module.register_buffer("scaling", torch.tensor(float(value), dtype=torch.promote_types(param.dtype, torch.float32),
                                                   device=param.device), persistent=False)


def _set_scaling(module, value: float) -> None:
    current = module.scaling
    if isinstance(current, torch.Tensor):
        with torch.no_grad():
            current.fill_(value)
    elif current != value:  # not prepared: an eager model follows it; a compiled one compiles again
        module.__dict__["scaling"] = float(value)


def _set_rank(module, rank: int) -> None:
    module.__dict__[_RANK] = rank
    if not module.__dict__.get(_HOOKED):
        module.register_state_dict_post_hook(_trim_to_rank)
        module.__dict__[_HOOKED] = True


def _trim_to_rank(module, state_dict, prefix, local_metadata) -> None:
    """A and B in the state dict as the adapter in use has them (its rank), not as padded."""
    rank = module.__dict__.get(_RANK)
    if rank is None:
        return
    for key, dim in ((prefix + "lora_A", 0), (prefix + "lora_B", 1)):
        if key in state_dict:
            state_dict[key] = state_dict[key].narrow(dim, 0, rank)
