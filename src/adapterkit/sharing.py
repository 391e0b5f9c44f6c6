"""`model.share_parameters` / `unshare_parameters`: adapters of one method holding the same parameter tensors.

The `adapters` package's API (MTL-LoRA's tasks share `lora_A` / `lora_B`). Which parameters may be shared is the
method's (`MethodSpec.shared_parameters`). Sharing ties every member's modules to the reference adapter's
parameter objects at each site, so one optimiser step moves them for all; each adapter still saves its own copy
(as the package: a saved task loads alone; share again after loading). Unsharing gives each member its own copy
(the package only forgets the group and leaves the tensors tied).
"""

from __future__ import annotations

import torch.nn as nn

from .blocks import AdapterCompositionBlock
from .errors import AdapterError
from .registry import members, spec_for, specs


def _names(adapter_names) -> list[str]:
    if isinstance(adapter_names, AdapterCompositionBlock):
        names = list(adapter_names.children)
    elif isinstance(adapter_names, str):
        names = [n.strip() for n in adapter_names.split(",")]
    elif isinstance(adapter_names, (list, tuple)):
        names = list(adapter_names)
    else:
        raise AdapterError(f"adapter_names must be a MultiTask block, a list of names or 'a,b'; got {adapter_names!r}")
    if not names or not all(isinstance(n, str) and n for n in names):
        raise AdapterError(f"share_parameters needs adapter names, got {adapter_names!r}")
    return list(dict.fromkeys(names))


def share(state, adapter_names, name: str | None = None, reference_adapter_name: str | None = None) -> str:
    """Tie the method's shareable parameters of `adapter_names` to those of `reference_adapter_name` (default:
    the first); the group is called `name` (default: the names joined by commas). Returns the group's name."""
    names = _names(adapter_names)
    name = name or ",".join(names)
    reference = reference_adapter_name or names[0]
    if reference not in names:
        raise AdapterError(f"reference adapter {reference!r} is not among the adapters to share: {names}")
    configs = [state.require(n) for n in names]
    kinds = {type(c) for c in configs}
    if len(kinds) > 1:
        raise AdapterError(f"adapters {names} have different configs ({', '.join(sorted(k.__name__ for k in kinds))}); "
                           "only adapters of one method can share parameters")
    if len(members(configs[0])) > 1:
        raise AdapterError(f"adapter {names[0]!r} is a union of methods; only single-method adapters can share")
    params = spec_for(configs[0]).shared_parameters
    if not params:
        able = ", ".join(s.label for s in specs() if s.shared_parameters) or "none"
        raise AdapterError(f"{spec_for(configs[0]).label} adapters cannot share parameters ({names}); methods that "
                           f"can: {able}")
    groups = state.shared_groups
    if name in groups:
        raise AdapterError(f"a group of shared parameters named {name!r} exists already; unshare_parameters it first "
                           "or pick another name")
    taken = [(n, g) for g, group in groups.items() for n in names if n in group["adapters"]]
    if taken:
        raise AdapterError(f"adapter {taken[0][0]!r} shares parameters in group {taken[0][1]!r} already; "
                           "unshare_parameters that group first")
    merged = [n for n in names if n in state.merged]
    if merged:
        raise AdapterError(f"adapter(s) {', '.join(map(repr, merged))} are merged into the weights; reset_adapter "
                           "them before sharing parameters")
    ties = _ties(state, names, reference, params)
    for module, pname, param in ties:
        setattr(module, pname, param)
    groups[name] = {"adapters": names, "reference": reference, "params": params}
    state.invalidate()
    return name


def _ties(state, names: list[str], reference: str, params: tuple) -> list:
    """(module, parameter name, the reference's parameter) for every member module, all checked first."""
    ref_sites = dict(state.layer_modules(reference))
    ties = []
    for other in names:
        if other == reference:
            continue
        sites = dict(state.layer_modules(other))
        if set(sites) != set(ref_sites):
            raise AdapterError(f"adapters {reference!r} and {other!r} sit on different projections "
                               f"({sorted(set(sites) ^ set(ref_sites))[:3]}...); only adapters with the same "
                               "targets can share parameters")
        for key, module in sites.items():
            for pname in params:
                mine, theirs = getattr(module, pname), getattr(ref_sites[key], pname)
                if mine.shape != theirs.shape:
                    raise AdapterError(
                        f"cannot share {pname} of {other!r} and {reference!r} at layer {key[0]} {key[1]}: shapes "
                        f"{tuple(mine.shape)} and {tuple(theirs.shape)} differ (use the same r / n_up_projection)")
                ties.append((module, pname, theirs))
    return ties


def unshare(state, adapter_names, name: str | None = None) -> None:
    """Give every member of the group its own copy of the shared parameters (values kept) and drop the group."""
    name = name or ",".join(_names(adapter_names))
    group = state.shared_groups.get(name)
    if group is None:
        raise AdapterError(f"no group of shared parameters is named {name!r}; groups: "
                           f"{', '.join(map(repr, state.shared_groups)) or '(none)'}")
    for other in group["adapters"]:
        if other == group["reference"]:
            continue
        for _, module in state.layer_modules(other):
            for pname in group["params"]:
                param = getattr(module, pname)
                setattr(module, pname, nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad))
    del state.shared_groups[name]
    state.invalidate()


def forget(state, adapter_name: str) -> None:
    """A deleted adapter leaves its group; the others stay tied (a new reference if it was the reference)."""
    for name in list(state.shared_groups):
        group = state.shared_groups[name]
        if adapter_name in group["adapters"]:
            group["adapters"].remove(adapter_name)
            if not group["adapters"]:
                del state.shared_groups[name]
            elif group["reference"] == adapter_name:
                group["reference"] = group["adapters"][0]


def groups(state) -> dict[str, list[str]]:
    return {name: list(group["adapters"]) for name, group in state.shared_groups.items()}
