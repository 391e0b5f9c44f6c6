"""The PEFT format: `adapter_config.json` (with `peft_type`) + `adapter_model.safetensors`.

PEFT keys name the wrapped model's modules: `base_model.model.<module path>.<parameter>`. The module paths come
from the architecture interface, so this file has no per-model knowledge; which PEFT types exist, their
parameters and their semantics come from the methods that declare a "peft" map (`MethodSpec.formats["peft"]`:
`READERS` {peft_type: reader}, `PARAMS`, `module_tensors`, `output_vector`, `peft_config`, optional
`export_refusal`, and for model-level tensors (VeRA's shared pair) `MODEL_LEVEL`, `complete_read`,
`model_level_tensors`; e.g. methods/lora/peft.py). This file reads and writes projection adapters: the same projections
in every layer.

- Prefix tuning (peft_type PREFIX_TUNING) has no exact conversion: PEFT passes its prefix as a key/value cache,
  so the model also offsets its position ids by the prefix length; ours (AdapterHub's semantics) keeps them.
  Both directions are refused with that reason (`NO_CONVERSION`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from ..errors import AdapterConfigError, CheckpointError
from ..naming import is_valid_name
from ..nn.experts import ExpertsTarget
from ..registry import spec_for, specs
from .common import (CONFIG_NAME, Checkpoint, base_prefix, layer_fused_parts, layer_prefixes, layer_projections,
                     parse_config)
from . import peft_experts, peft_modules
from .files import StagedWrite, read_weights
from .peft_modules import PEFT_PREFIX, targeted, write_module

FORMAT = "peft"
SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
WEIGHTS_NAME = "adapter_model.bin"


def _maps() -> list:
    """The "peft" maps of the registered methods."""
    return [spec.formats["peft"] for spec in specs() if "peft" in spec.formats]


def _readers() -> dict[str, Callable]:
    return {peft_type: reader for m in _maps() for peft_type, reader in m.READERS.items()}


def _whole_readers() -> dict[str, Callable]:
    """PEFT types a method reads as a whole checkpoint (no projection weights: prompt tuning)."""
    return {peft_type: reader for m in _maps() for peft_type, reader in getattr(m, "READ_CHECKPOINT", {}).items()}


def _labels() -> str:
    """The methods the PEFT format holds here, for messages ("LoRA / (IA)^3 and LoHa and LoKr")."""
    return " and ".join(spec.label for spec in specs() if "peft" in spec.formats)


def _params() -> dict[str, str]:
    return {suffix: ours for m in _maps() for suffix, ours in m.PARAMS.items()}


def _split_model_level(weights: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """(layer weights, model-level ones): keys `base_model.<name>` (optionally `.<adapter>`) for a `<name>` some map
    lists in `MODEL_LEVEL` (peft's shared tensors, e.g. VeRA's frozen `vera_A`), the latter keyed by `<name>`."""
    names = {n for m in _maps() for n in getattr(m, "MODEL_LEVEL", ())}
    if not names:
        return dict(weights), {}
    pattern = re.compile(rf"^(?:base_model\.)?({'|'.join(map(re.escape, sorted(names)))})(?:\.[^.]+)?$")
    layer, model_level = {}, {}
    for key, tensor in weights.items():
        m = pattern.match(key)
        if m:
            model_level[m.group(1)] = tensor
        else:
            layer[key] = tensor
    return layer, model_level


# PEFT types that adapterkit has a method for, but whose semantics differ: why no exact conversion exists
NO_CONVERSION = {
    "PREFIX_TUNING": "PEFT prefix tuning feeds its prefix to the model as a key/value cache, so the model also "
                     "shifts its position ids by the prefix length (a PEFT prefix equals an adapterkit prefix "
                     "only with the positions offset); adapterkit's prefix tuning (AdapterHub's) keeps the "
                     "positions, so there is no exact conversion",
}


def is_peft(data: Mapping[str, Any]) -> bool:
    return "peft_type" in data


# -- reading -------------------------------------------------------------------------------------------
def _check_architecture(model: nn.Module, source: Path, data: Mapping[str, Any]) -> None:
    """PEFT records the base model's class module (`transformers.models.<type>.modeling_<type>`) when it can."""
    mapping = data.get("auto_mapping") or {}
    if not isinstance(mapping, Mapping):
        raise CheckpointError(f"{source}: auto_mapping={mapping!r} must be an object (or null)")
    library = mapping.get("parent_library") or ""
    m = re.fullmatch(r"transformers\.models\.([\w]+)\.modeling_\1", library) if isinstance(library, str) else None
    ours = str(getattr(model.config, "model_type", "")).replace("-", "_")
    if m and m.group(1) != ours:
        raise CheckpointError(
            f"{source}: the adapter was made for model_type {m.group(1)!r} (another architecture; base class "
            f"{mapping.get('base_model_class')}), but this model is {ours!r}"
        )


def _sites(model: nn.Module, weights: Mapping[str, torch.Tensor], weights_file: Path, data) -> dict:
    """PEFT weights -> {(layer_id, location): {param: tensor}}; any key adapterkit cannot place is an error."""
    state = model.adapter_state
    tables = layer_projections(state)
    first = {path: start for path, start, _ in state.stacks}
    stacks = "|".join(re.escape(path) for path in sorted(first, key=len, reverse=True))
    known = _params()
    params = "|".join(map(re.escape, known))
    pattern = re.compile(rf"^(?:.*?\.)?({stacks})\.(\d+)\.(.+)\.({params})$")
    fused = layer_fused_parts(state)
    out: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in sorted(weights.items()):
        m = pattern.match(key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key)
        layer_id = first[m.group(1)] + int(m.group(2)) if m else None
        location = tables[layer_id].get(m.group(3)) if m and layer_id < len(tables) else None
        parts = fused[layer_id].get(m.group(3)) if m and location is None and layer_id < len(fused) else None
        if parts:
            _split_fused(key, tensor, known[m.group(4)], parts, layer_id, out, weights_file)
            continue
        if location is None:
            unknown.append(key)
            continue
        out.setdefault((layer_id, location), {})[known[m.group(4)]] = tensor
    if unknown:
        extra = f" (modules_to_save: {data.get('modules_to_save')})" if data.get("modules_to_save") else ""
        names = sorted({name for table in tables for name in table})
        raise CheckpointError(
            f"{weights_file}: holds weights adapterkit cannot place{extra}: {', '.join(sorted(unknown)[:6])}"
            + (f", ... ({len(unknown)} in all)" if len(unknown) > 6 else "")
            + f"; adapterkit reads {_labels()} weights on the projections {', '.join(names)}"
        )
    if not out:
        raise CheckpointError(f"{weights_file}: holds no {_labels()} weights")
    return out


def _split_fused(key: str, tensor: torch.Tensor, param: str, parts: list, layer_id: int, out: dict,
                 weights_file: Path) -> None:
    """A peft (IA)^3 vector on a whole fused projection (GPT-2's c_attn) scales each part's output rows: one
    adapterkit vector per part. A LoRA there is one low-rank update over all parts (ours: one per part), and a
    feedforward (IA)^3 scales the input the parts share: neither has an adapterkit form."""
    if param != "ia3_l" or tensor.dim() != 2 or tensor.shape[1] != 1:
        what = "a low-rank update (LoRA / VeRA: one over all its parts; adapterkit has one per part)" \
            if param != "ia3_l" \
            else "a feedforward (IA)^3 (it scales the input all parts share)"
        raise CheckpointError(f"{weights_file}: {key} puts {what} on a fused projection; no exact conversion exists")
    vector = tensor.reshape(-1)
    for location, projection in parts:
        rows = projection.rows if isinstance(projection.rows, slice) else projection.rows.to(vector.device)
        out.setdefault((layer_id, location), {})["ia3_l"] = vector[rows].reshape(-1, 1)


def _targets(sites: dict, state, source: Path) -> dict[str, Any]:
    """Config fields (attn_matrices, intermediate_lora, output_lora, leave_out) that select exactly these sites.

    adapterkit's attention matrices apply to self- and cross-attention alike, and an adapter covers the same
    projections in every layer it touches (where they exist: encoder layers have no cross-attention)."""
    per_layer: dict[int, set[str]] = {}
    for layer_id, location in sites:
        per_layer.setdefault(layer_id, set()).add(location)
    found = set().union(*per_layer.values())
    attn = [m for m in ("q", "k", "v", "o") if f"attn_{m}" in found or f"cross_attn_{m}" in found]
    fields = {"selfattn_lora": bool(attn), "attn_matrices": attn or ["q", "v"],
              "intermediate_lora": any(loc.startswith("intermediate") for loc in found),
              "output_lora": any(loc.startswith("output") for loc in found)}
    selected = {loc for loc, _ in state.interface.linear_locations(
        attn_matrices=attn, intermediate=fields["intermediate_lora"], output=fields["output_lora"])}
    present = [set(table.values()) | {loc for parts in fused.values() for loc, _ in parts}
               for table, fused in zip(layer_projections(state), layer_fused_parts(state))]
    wrong = {i: locs for i, locs in per_layer.items() if locs != selected & present[i]}
    if wrong:
        detail = "; ".join(f"layer {i}: {', '.join(sorted(v))}" for i, v in sorted(per_layer.items()))
        raise CheckpointError(
            f"{source}: the adapter targets different projections in different layers ({detail}); adapterkit "
            "adapters target the same projections in every layer they touch (attention matrices in self- and "
            "cross-attention alike)"
        )
    return {**fields, "leave_out": [i for i in range(len(state.layers)) if i not in per_layer]}


def read(model, directory: Path, data: dict) -> Checkpoint:
    source = directory / CONFIG_NAME
    peft_type = data.get("peft_type")
    whole = _whole_readers()
    if isinstance(peft_type, str) and peft_type in whole:  # no projection weights: the method reads the file
        _check_architecture(model, source, data)
        weights_file, weights = read_weights(directory, SAFE_WEIGHTS_NAME, WEIGHTS_NAME)
        config_cls, fields, tensors = whole[peft_type](source, data, weights, weights_file)
        config = parse_config(source, lambda d: config_cls(**d), fields)
        name = directory.name if is_valid_name(directory.name) else "default"
        return Checkpoint(name=name, config=config, tensors=tensors, config_file=source, weights_file=weights_file,
                          format=FORMAT)
    readers = _readers()
    if not isinstance(peft_type, str) or peft_type not in readers:
        why = f" ({NO_CONVERSION[peft_type]})" if isinstance(peft_type, str) and peft_type in NO_CONVERSION else ""
        raise CheckpointError(
            f"{source}: PEFT type {peft_type!r} is not supported{why}; supported: {', '.join([*readers, *whole])}"
        )
    _check_architecture(model, source, data)
    weights_file, weights = read_weights(directory, SAFE_WEIGHTS_NAME, WEIGHTS_NAME)
    weights, model_level = _split_model_level(weights)
    if data.get("target_parameters"):  # LoRA on fused experts weights (peft_experts.py)
        weights = peft_experts.unnest(model, weights, data["target_parameters"])
    located = None  # interface locations first; where they cannot hold the file, module names (peft_modules.py)
    if peft_modules.has_interface(model):
        try:
            sites = _sites(model, weights, weights_file, data)
            targets = _targets(sites, model.adapter_state, source)
            config_cls, fields, tensors = readers[peft_type](source, data, sites, targets)
        except CheckpointError as e:
            located = e
    if located is not None or not peft_modules.has_interface(model):
        try:
            sites, names = peft_modules.module_sites(model, weights, weights_file, _params(), data)
            targets = peft_modules.module_targets(model, names, data, target_modules)
            config_cls, fields, tensors = readers[peft_type](source, data, sites, targets)
        except CheckpointError:
            if located is not None:  # the locations' error names what the file holds in adapterkit's terms
                raise located from None
            raise
    config = parse_config(source, lambda d: config_cls(**d), fields)
    # a map that reads model-level tensors completes the adapter's from them (or from the config, peft's seed)
    complete = getattr(next(m for m in _maps() if peft_type in m.READERS), "complete_read", None)
    if complete is not None:
        tensors = complete(model, source, data, config, model_level, tensors)
    elif model_level:
        raise CheckpointError(f"{weights_file}: PEFT {peft_type} holds model-level tensors "
                              f"({', '.join(sorted(model_level))}) that adapterkit cannot place")
    name = directory.name if is_valid_name(directory.name) else "default"
    return Checkpoint(name=name, config=config, tensors=tensors, config_file=source, weights_file=weights_file,
                      format=FORMAT)


# -- writing -------------------------------------------------------------------------------------------
def target_modules(model: nn.Module, wanted: set[str]) -> list[str] | str:
    """The shortest `target_modules` that selects exactly `wanted` (module names in `model`) under peft's rule
    (a list entry matches a module named it or ending in "." + it): layer-relative paths when unambiguous,
    else full names, else an exact regex."""
    names = [n for n, m in model.named_modules() if n and not n.startswith("adapterkit.")]

    def selects(targets: list[str]) -> set[str]:
        return {n for n in names if n in targets or any(n.endswith("." + t) for t in targets)}

    stacks = "|".join(re.escape(path) for path, _, _ in model.adapter_state.stacks)
    short = sorted({re.sub(rf"^.*?(?:{stacks})\.\d+\.", "", n) for n in wanted})
    for candidate in (short, sorted(wanted)):
        if selects(candidate) == wanted:
            return candidate
    return "|".join(re.escape(n) for n in sorted(wanted))  # pragma: no cover - needs a pathological model


def write(model, stage: StagedWrite, name: str) -> None:
    state = model.adapter_state
    config = state.configs[name]
    spec = spec_for(config) if config.method != "union" else None
    peft_map = spec.formats.get("peft") if spec is not None else None
    if peft_map is None:
        key = config.method.upper()  # peft's type names are the methods' names in capitals
        why = f" ({NO_CONVERSION[key]})" if key in NO_CONVERSION else ""
        raise AdapterConfigError(
            f"adapter {name!r} is a {config.method} adapter; the PEFT format holds {_labels()} "
            f"adapters{why}; save it as format='adapterkit' or 'adapterhub'"
        )
    if hasattr(peft_map, "write_checkpoint"):  # a model-level method gives its whole file (prompt tuning)
        tensors, peft_config = peft_map.write_checkpoint(model, name)
        stage.write_safetensors(SAFE_WEIGHTS_NAME, tensors, metadata={"format": "pt"})
        stage.write_json(CONFIG_NAME, peft_config)
        return
    prefix, layers = base_prefix(model), layer_prefixes(state)
    paths = [{location: path for path, location in table.items()} for table in layer_projections(state)]
    fused_names = [{location: path for path, parts in table.items() for location, _ in parts}
                   for table in layer_fused_parts(state)]
    tensors: dict[str, torch.Tensor] = {}
    wanted, feedforward = set(), set()
    targeted(state, name, peft_map, tensors, wanted, feedforward)  # module-targeted modules, by module name
    experts = {paths[i][loc] for (i, loc), _ in state.layer_modules(name)
               if isinstance(state.sites[(i, loc)].target, ExpertsTarget)}  # "mlp.experts.gate_up_proj", ...
    wrappers = {(m, p): w for w, (m, _, p) in peft_experts.wrapped_names(model, experts).items()}
    for (layer_id, location), module in state.layer_modules(name):
        if isinstance(state.sites[(layer_id, location)].target, ExpertsTarget):  # peft's target_parameters
            owner, _, param = f"{prefix}{layers[layer_id]}.{paths[layer_id][location]}".rpartition(".")
            params, _ = peft_map.module_tensors(module)
            for suffix, tensor in peft_experts.to_peft(params).items():
                tensors[f"{PEFT_PREFIX}{wrappers[(owner, param)]}.{suffix}"] = tensor
            continue
        vector = peft_map.output_vector(module) if location in fused_names[layer_id] else None
        if vector is not None:
            # peft scales the whole fused projection: its vector holds our parts' rows, 1 where no part is here
            module_name = f"{prefix}{layers[layer_id]}.{fused_names[layer_id][location]}"
            wanted.add(module_name)
            projection = state.sites[(layer_id, location)].target
            key, weight = f"{PEFT_PREFIX}{module_name}.ia3_l", projection.module.weight
            if key not in tensors:
                tensors[key] = weight.new_ones(weight.shape[1] if projection.transposed else weight.shape[0], 1)
            rows = projection.rows if isinstance(projection.rows, slice) else projection.rows.to(weight.device)
            tensors[key][rows] = vector.reshape(-1, 1).to(tensors[key])
            continue
        refusal = getattr(peft_map, "export_refusal", None)
        why = refusal(state.sites[(layer_id, location)].target) if refusal is not None else None
        if why:
            raise AdapterConfigError(f"adapter {name!r}: {why} (layer {layer_id} {location}); save it as "
                                     "format='adapterkit'")
        if location not in paths[layer_id]:
            raise AdapterConfigError(f"adapter {name!r}: {location!r} (a slice of a fused projection) has no module "
                                     "of its own for PEFT to target (PEFT's LoRA there is one update over all the "
                                     "parts); save it as format='adapterkit' or 'adapterhub'")
        module_name = f"{prefix}{layers[layer_id]}.{paths[layer_id][location]}"
        write_module(peft_map, module, module_name, tensors, wanted, feedforward)
    common = {
        "target_modules": target_modules(model, wanted), "fan_in_fan_out": False, "modules_to_save": None,
        "task_type": None, "inference_mode": True, "revision": None, "exclude_modules": None,
        "base_model_name_or_path": getattr(model.config, "_name_or_path", None) or None,
        "auto_mapping": {"base_model_class": type(model).__name__, "parent_library": type(model).__module__},
    }
    if experts:
        common["target_parameters"] = sorted(experts)
    peft_config = peft_map.peft_config(config, common, target_modules(model, feedforward) if feedforward else [])
    model_level = getattr(peft_map, "model_level_tensors", None)  # peft's shared tensors (VeRA's frozen pair)
    if model_level is not None:
        tensors.update(model_level(state, name, config))
    stage.write_safetensors(SAFE_WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    stage.write_json(CONFIG_NAME, peft_config)
