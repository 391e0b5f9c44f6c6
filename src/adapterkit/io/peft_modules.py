"""PEFT checkpoints placed by module name: adapters of the LoRA family that select their modules with
`target_modules` (configs/module_targets.py), on any model, with or without an interface.

Reading: a PEFT file whose weights fit no interface-location config (a model without an interface, a selection
that differs between layers, LoRA on a whole fused projection, an embedding or a convolution, ...) becomes a
module-targeted config: every key `base_model.model.<module name>.<parameter>` names a module of the model (or of
its base model, for a file made on the bare model) and the config's `target_modules` selects exactly those modules
(peft's own list, regex or "all-linear" reselects the same ones, but peft's layers_to_transform need not: the
exact set is kept). (IA)^3's `feedforward_modules` is kept as peft wrote it.

Writing: each module-targeted module is saved under its module's name, as peft names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

from ..configs.module_targets import named_modules, target_key
from ..errors import AdapterConfigError, CheckpointError
from ..interfaces.missing import MissingInterface
from ..nn.module_target import targeted_modules
from .common import base_prefix

PEFT_PREFIX = "base_model.model."


def has_interface(model) -> bool:
    return not isinstance(model.adapter_state.interface, MissingInterface)


def module_sites(model, weights: Mapping[str, torch.Tensor], weights_file: Path, params: Mapping[str, str],
                 data: Mapping) -> tuple[dict, list[str]]:
    """({("model", shared key): {our parameter: tensor}}, module names in model order) of PEFT weights placed by
    module name; a CheckpointError naming the keys that name no module of the model."""
    order = {n: i for i, (n, _) in enumerate(named_modules(model))}
    prefix = base_prefix(model)
    suffixes = "|".join(map(re.escape, sorted(params, key=len, reverse=True)))
    pattern = re.compile(rf"^(.+)\.({suffixes})$")
    out: dict = {}
    names: set[str] = set()
    unknown = []
    for key, tensor in sorted(weights.items()):
        m = pattern.match(key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key)
        name = None
        if m:
            name = next((n for n in (m.group(1), prefix + m.group(1)) if n in order), None)
        if name is None and _saved_base_embedding(model, key, tensor, order, prefix):
            continue
        if name is None:
            unknown.append(key)
            continue
        names.add(name)
        out.setdefault(("model", target_key(name)), {})[params[m.group(2)]] = tensor
    if unknown:
        extra = f" (modules_to_save: {data.get('modules_to_save')})" if data.get("modules_to_save") else ""
        raise CheckpointError(f"{weights_file}: holds weights that name no module of {type(model).__name__}{extra}: "
                              + ", ".join(unknown[:6]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 6 else ""))
    if not out:
        raise CheckpointError(f"{weights_file}: holds no adapter weights")
    return out, sorted(names, key=order.__getitem__)


def _saved_base_embedding(model, key: str, tensor: torch.Tensor, order: dict, prefix: str) -> bool:
    """peft saves the whole weight of an embedding it targets (`<name>.base_layer.weight`, its
    save_embedding_layers="auto"); a copy equal to the model's own is skipped, anything else (a resized or trained
    vocabulary) refused."""
    m = re.match(r"^(.+)\.base_layer\.weight$", key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key)
    name = next((n for n in (m.group(1), prefix + m.group(1)) if n in order), None) if m else None
    if name is None:
        return False
    weight = model.get_submodule(name).weight
    if weight.shape == tensor.shape and torch.equal(weight.detach().cpu(), tensor.to(weight.dtype).cpu()):
        return True
    raise CheckpointError(f"{key}: the file holds its own weights for {name} (a resized or trained embedding, "
                          f"{tuple(tensor.shape)}), which adapterkit does not load into the base model; load them "
                          "into the model first")


def module_targets(model, names: list[str], data: Mapping, exact) -> dict:
    """The config fields that select exactly `names` (`exact`: io/peft's shortest-list writer; the exact set
    already reflects peft's layers_to_transform / layers_pattern)."""
    fields = {"target_modules": exact(model, set(names)), "exclude_modules": None}
    if data.get("peft_type") == "IA3":
        fields["feedforward_modules"] = data.get("feedforward_modules") or None
    return fields


def write_module(peft_map, module, module_name: str, tensors: dict, wanted: set, feedforward: set) -> None:
    """One adapter module's tensors in a PEFT export, under the model module it adapts."""
    wanted.add(module_name)
    params, is_feedforward = peft_map.module_tensors(module)
    for suffix, tensor in params.items():
        tensors[f"{PEFT_PREFIX}{module_name}.{suffix}"] = tensor
    if is_feedforward:
        feedforward.add(module_name)


def targeted(state, name: str, peft_map, tensors: dict, wanted: set, feedforward: set) -> None:
    """Add adapter `name`'s module-targeted modules to a PEFT export: their tensors under their module's name."""
    names = {id(m): n for n, m in named_modules(state.model)}
    refusal = getattr(peft_map, "export_refusal", None)
    for key, module in targeted_modules(state, name):
        target = state.sites[key].target
        module_name = names[id(target.module)]
        why = refusal(target) if refusal is not None else None
        if why:
            raise AdapterConfigError(f"adapter {name!r}: {why} ({module_name}); save it as format='adapterkit'")
        write_module(peft_map, module, module_name, tensors, wanted, feedforward)
