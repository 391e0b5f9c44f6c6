"""The AdapterHub format (adapter-transformers 3.x, `adapters` 1.x): configs, weight names, directories.

A directory holds `adapter_config.json` (keys config, hidden_size, model_type, model_name, model_class, name,
version) and `adapter.safetensors` or `pytorch_adapter.bin`. AdapterHub keys name the model's own modules
(`encoder.layer.3.output.adapters.<name>.adapter_down.0.weight`, `...attention.self.query.loras.<name>.lora_A`,
`invertible_adapters.<name>.F.0.weight`); adapterkit groups them per adapter (`layers.3.output_adapter.down.weight`).
The architecture interface supplies the module paths, so this file has no per-model knowledge.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..configs import AdapterConfig, BnConfig, ConfigUnion, LoRAConfig, PrefixTuningConfig
from ..errors import AdapterConfigError, CheckpointError
from ..interfaces.base import FusedSlice, ModelInterface, ResidualSite, present, resolve
from ..utils import find_submodule
from .common import (CONFIG_NAME, Checkpoint, check_compatible, linear_paths, model_facts, name_from, parse_config,
                     single_stack)
from .files import StagedWrite, read_safetensors, read_torch_bin

FORMAT = "adapterhub"
WEIGHTS_NAME = "pytorch_adapter.bin"
SAFE_WEIGHTS_NAME = "adapter.safetensors"
# adapter-transformers 2.x weight names -> current ones (as the `adapters` loader renames them)
_LEGACY_KEYS = {"attention_text_task_adapters": "adapters", "attention_text_lang_adapters": "adapters",
                "layer_text_task_adapters": "adapters", "layer_text_lang_adapters": "adapters",
                "invertible_lang_adapters": "invertible_adapters"}
# activation names of configs written before versions were recorded (adapter-transformers 2.x)
_LEGACY_ACTIVATIONS = {"gelu": "gelu_new", "gelu_orig": "gelu"}

# AdapterHub fields adapterkit does not implement, with the value that means "off".
_INERT_FIELDS = {
    "init_weights_seed": None, "stochastic_depth": 0.0, "use_dora": False, "vera_d": None, "vera_b": None,
    "dtype": None,
}
_CLASSES = {"bottleneck": BnConfig, "lora": LoRAConfig, "prefix_tuning": PrefixTuningConfig}


def config_from_adapterhub(data: Mapping[str, Any]) -> AdapterConfig:
    """An AdapterHub config dict (`config.to_dict()`, or `adapter_config.json["config"]`) as an adapterkit config."""
    data = dict(data.get("config", data)) if "config" in data and isinstance(data["config"], Mapping) else dict(data)
    architecture = data.pop("architecture", None) or "bottleneck"
    if architecture == "union":
        return ConfigUnion(*[config_from_adapterhub(member) for member in data.get("configs", [])])
    for key, off in _INERT_FIELDS.items():
        if key in data and data.pop(key) != off:
            raise AdapterConfigError(f"AdapterHub config sets {key!r}, which adapterkit does not support yet")
    if "invertible_adapter" in data:  # adapter-transformers 2.x/3.x nested form
        inv = data.pop("invertible_adapter") or {}
        data.setdefault("inv_adapter", inv.get("block_type"))
        data.setdefault("inv_adapter_reduction_factor", inv.get("reduction_factor"))
    cls = _CLASSES.get(architecture)
    if cls is None:
        raise AdapterConfigError(
            f"AdapterHub architecture {architecture!r} is not supported yet; supported: {', '.join(_CLASSES)}, union"
        )
    return cls.from_dict(data)


def _locations(interface: ModelInterface) -> dict[str, str]:
    """AdapterHub's module path within a layer (the interface's `adapterhub` name for sublayer-hook sites, e.g.
    GPT-2's `attention_adapters`) -> adapterkit location key."""
    out = {}
    for location, spec in interface.residual_sites.items():
        path = _hub_path(interface, location, spec, None)
        if path is not None:
            out[path] = location
    out.update(linear_paths(interface))
    return out

def _hub_path(interface: ModelInterface, location: str, spec, layer: nn.Module | None) -> str | None:
    """Where AdapterHub keeps `location`'s weights within a layer (negative indices made concrete if a layer
    is given), or None for a location AdapterHub has no name for."""
    path = interface.adapterhub.get(location)
    if path is None:
        if isinstance(spec, ResidualSite):
            path = spec.module
        elif isinstance(spec, FusedSlice):
            path = spec.module
        elif isinstance(spec, str):
            alternatives = spec.rstrip("?").split("|")
            path = next((a for a in alternatives if layer is None or find_submodule(layer, a) is not None),
                        alternatives[0])
        else:
            return None
    return path if layer is None else _concrete(layer, path)


def _concrete(layer: nn.Module, path: str) -> str:
    parts, module = [], layer
    for part in path.split("."):
        if module is not None and part.lstrip("-").isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
            part = str(int(part) % len(module))
        module = find_submodule(module, part) if module is not None else None
        parts.append(part)
    return ".".join(parts)


def _layer_maps(interface: ModelInterface, state) -> tuple[dict[str, int], list[dict[str, list[str]]] | None,
                                                              dict[str, list[str]]]:
    """(hub stack path -> first layer id, per-layer {hub path: [locations]} if `state` is given, global map)."""
    specs = list(interface.residual_sites.items()) + interface.all_linear_locations()

    def mapping(layer):
        out: dict[str, list[str]] = {}
        for location, spec in specs:
            if layer is not None and not present(layer, spec):
                continue
            path = _hub_path(interface, location, spec, layer)
            if path is not None:
                out.setdefault(path, []).append(location)
        return out

    hub_layers = interface.hub_layers()
    if state is None:
        return {hub_layers[0].rstrip("?"): 0}, None, mapping(None)
    offsets = {}
    for ours, hub in zip(interface.layers, hub_layers):
        for path, first, _ in state.stacks:
            if path == ours.rstrip("?"):
                offsets[hub.rstrip("?")] = first
    return offsets, [mapping(layer) for layer in state.layers], {}


_BOTTLENECK_PARAM = {"adapter_up": "up", "adapter_norm_after": "norm_after", "adapter_norm_before": "norm_before",
                     "gate": "gate"}


def _bottleneck_param(rest: str, config: BnConfig) -> str:
    head, _, tail = rest.partition(".")
    if head == "adapter_down":
        index, _, tail = tail.partition(".")
        # adapter_down is Sequential([LayerNorm if ln_before], Linear or PHMLayer, activation)
        linear_index = 1 if config.ln_before else 0
        return ("down." if int(index) == linear_index else "norm_before.") + tail
    if head in _BOTTLENECK_PARAM:
        return f"{_BOTTLENECK_PARAM[head]}.{tail}"
    if head == "scaling":
        return "scaling"
    raise KeyError(rest)


def state_dict_from_adapterhub(weights: Mapping[str, torch.Tensor], name: str, interface: ModelInterface,
                               config: AdapterConfig, state=None) -> dict[str, torch.Tensor]:
    """AdapterHub weights of adapter `name` -> the state dict of `model.adapterkit[name]`.

    Module names come from the interface (`adapterhub_layers`, `adapterhub`); pass the model's `state`
    (`model.adapter_state`) for models with several layer stacks or sublayers addressed from the end. A fused
    projection's LoRA weights (GPT-2's `c_attn`) are split into its q / k / v parts. Unknown keys raise, naming
    the key: a checkpoint is never loaded half-understood.
    """
    offsets, per_layer, global_map = _layer_maps(interface, state)
    if state is None and len(interface.layers) > 1:
        raise AdapterConfigError("this architecture has several layer stacks; pass state=model.adapter_state")
    stacks = "|".join(re.escape(p) for p in sorted(offsets, key=len, reverse=True))
    pattern = re.compile(
        rf"^(?:.*?\.)?({stacks})\.(\d+)\.(.+?)\.(adapters|loras)\.{re.escape(name)}\.(.+)$")
    _check_prefix_shift(config, interface, f"AdapterHub adapter {name!r}")
    lora = _member(config, LoRAConfig, required=False)
    enabled = []
    if lora is not None:
        enabled = [loc for loc, _ in interface.linear_locations(
            attn_matrices=lora.attn_matrices if lora.selfattn_lora else (),
            intermediate=lora.intermediate_lora, output=lora.output_lora)]
        # locations whose AdapterHub namesake is another module, where this model has them (gated T5's wi_1)
        present_here = None if per_layer is None else {loc for table in per_layer for locs in table.values()
                                                       for loc in locs}
        differs = [loc for loc in enabled if loc in interface.adapterhub_differs
                   and (present_here is None or loc in present_here)]
        if differs:
            groups = sorted({loc.split("_")[0] for loc in differs})
            raise AdapterConfigError(
                f"AdapterHub adapter {name!r} has {' and '.join(groups)} LoRA / (IA)^3 on other projections than "
                "adapterkit's in this architecture: "
                + "; ".join(interface.adapterhub_differs[loc] for loc in differs) + "; no exact conversion exists")
    n = re.escape(name)
    model_level = [  # (pattern, our key prefix) for modules that belong to the whole model
        (re.compile(rf"^(?:.*\.)?invertible_adapters\.{n}\.(.+)$"), "shared.invertible."),
        (re.compile(rf"^(?:.*\.)?shared_parameters\.{n}\.(.+)$"), "shared.phm."),
    ] + [(re.compile(rf"^(?:.*\.)?prefix_tunings\.{n}\.{re.escape(group)}\.(.+)$"), f"shared.{ours}.")
         for ours, group in prefix_groups(interface).items()]
    prefix_gate = re.compile(rf"^(?:.*?\.)?({stacks})\.(\d+)\.(.+?)\.prefix_tuning\.prefix_gates\.{n}\.(.+)$")
    cross_attention = _attention_hub_path(interface, "cross_attention")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        hit = next(((p.match(key), ours) for p, ours in model_level if p.match(key)), None)
        if hit:
            out[hit[1] + hit[0].group(1)] = tensor
            continue
        m = prefix_gate.match(key)
        if m:
            gate = "cross_prefix_gate" if m.group(3) == cross_attention else "prefix_gate"
            out[f"layers.{offsets[m.group(1)] + int(m.group(2))}.{gate}.{m.group(4)}"] = tensor
            continue
        m = pattern.match(key)
        locations = None
        if m:
            layer_id = offsets[m.group(1)] + int(m.group(2))
            table = global_map if per_layer is None else (per_layer[layer_id] if layer_id < len(per_layer) else {})
            locations = table.get(m.group(3))
        if m is None or not locations:
            raise AdapterConfigError(f"AdapterHub weight {key!r} of adapter {name!r} has no adapterkit counterpart")
        kind, rest = m.group(4), m.group(5)
        if kind == "adapters":
            location = next((loc for loc in locations if loc in interface.residual_sites), None)
            if location is None:
                raise AdapterConfigError(f"AdapterHub weight {key!r}: no bottleneck location at {m.group(3)!r}")
            out[f"layers.{layer_id}.{location}.{_bottleneck_param(rest, _member(config, BnConfig))}"] = tensor
            continue
        parts = [loc for loc in enabled if loc in locations]  # a fused projection holds several, in order
        if not parts:
            raise AdapterConfigError(f"AdapterHub weight {key!r}: the config enables no projection at {m.group(3)!r}")
        _check_contiguous(interface, parts[0], f"AdapterHub weight {key!r}")
        if rest.startswith("gate."):  # a gated LoRA's gate reads the projection's input: one per part
            for location in parts:
                out[f"layers.{layer_id}.{location}.{rest}"] = tensor
            continue
        scale = lora.composition_mode == "scale"  # (IA)^3 keeps only lora_B, shaped (out, 1)
        if scale and rest != "lora_B":
            raise AdapterConfigError(f"unexpected (IA)^3 weight {key!r}")
        for location, chunk in zip(parts, tensor.chunk(len(parts), dim=0)):
            if scale:
                out[f"layers.{layer_id}.{location}.ia3_l"] = chunk.reshape(-1)
            else:
                out[f"layers.{layer_id}.{location}.{rest}"] = chunk.contiguous()
    return out


def _check_prefix_shift(config: AdapterConfig, interface: ModelInterface, what: str) -> None:
    """Where the model has a relative position bias (T5), the package's prefix tuning is `shift_positions=True`:
    refuse converting a prefix adapter without it, either way."""
    prefix = _member(config, PrefixTuningConfig, required=False)
    if prefix is not None and interface.position_bias and not prefix.shift_positions:
        raise AdapterConfigError(
            f"{what}: in this architecture the `adapters` package computes prefix tuning with the relative position "
            "bias over prefix and sequence together (every real key prefix_length positions further from its "
            "query); that is PrefixTuningConfig(shift_positions=True), which AdapterHub loading sets; or save in "
            "the adapterkit format")


def with_shifted_prefix(config: AdapterConfig) -> AdapterConfig:
    """`config` with shift_positions on its prefix tuning (itself or a union member): the package's semantics."""
    if isinstance(config, ConfigUnion):
        return ConfigUnion(*[with_shifted_prefix(member) for member in config])
    return config.replace(shift_positions=True) if isinstance(config, PrefixTuningConfig) else config


def _member(config: AdapterConfig, cls: type, required: bool = True) -> AdapterConfig | None:
    """`config` itself, or its union member of type `cls` (the one a weight belongs to)."""
    for member in (config if isinstance(config, ConfigUnion) else [config]):
        if isinstance(member, cls):
            return member
    if required:
        raise AdapterConfigError(f"the adapter config has no {cls.__name__} part for these weights")
    return None


# -- writing: adapterkit -> AdapterHub ---------------------------------------------------------------
def config_to_adapterhub(config: AdapterConfig) -> dict[str, Any]:
    """adapterkit config -> the `config` dict AdapterHub's `AdapterConfig.load` accepts (same field names)."""
    if isinstance(config, LoRAConfig) and "o" in config.attn_matrices:
        raise AdapterConfigError(
            "AdapterHub LoRA cannot target the attention output projection ('o' in attn_matrices; the `adapters` "
            "package silently ignores it); save in adapterkit or PEFT format instead"
        )
    if isinstance(config, LoRAConfig) and config.scale_inputs:
        raise AdapterConfigError(
            f"(IA)^3 with scale_inputs={config.scale_inputs} (inputs scaled, as peft's feedforward_modules) has no "
            "AdapterHub form (the `adapters` package scales outputs only); save in adapterkit or PEFT format")
    if not isinstance(config, (BnConfig, LoRAConfig, PrefixTuningConfig)):
        raise AdapterConfigError(f"{type(config).__name__} has no AdapterHub form; supported: bottleneck, LoRA, "
                                 "(IA)^3, prefix tuning")
    out = config.to_dict()
    for member in [out, *out.get("configs", [])]:
        member.pop("shift_positions", None)  # adapterkit's field: the package knows one behaviour (see T5 prefixes)
    if out["architecture"] == "bottleneck":
        out["architecture"] = None  # AdapterHub's name for its bottleneck config class
    return out


def _bottleneck_key(param: str, config: BnConfig) -> str:
    head, _, tail = param.partition(".")
    if head == "down":
        return f"adapter_down.{1 if config.ln_before else 0}.{tail}"
    if head == "norm_before":
        return f"adapter_down.0.{tail}"
    inverse = {v: k for k, v in _BOTTLENECK_PARAM.items()}
    if head in inverse:
        return f"{inverse[head]}.{tail}"
    if head == "scaling":
        return "scaling"
    raise KeyError(param)  # pragma: no cover - BottleneckAdapter has no other parameters


def prefix_groups(interface: ModelInterface) -> dict[str, str]:
    """adapterkit's prefix module key -> the group the `adapters` prefix pool keeps it under."""
    return {"prefix": interface.adapterhub.get("prefix", "self_prefix"), "prefix_encoder": "encoder_prefix",
            "prefix_cross": "cross_prefix"}


def _shared_keys(interface: ModelInterface) -> dict[str, str]:
    """Model-level modules: adapterkit's `shared.<module>.` -> the AdapterHub key prefix (relative to the base
    model)."""
    invertible = interface.adapterhub.get("invertible", "invertible_adapters")
    prefixes = {ours: f"prefix_tuning.prefix_tunings.{{name}}.{group}."
                for ours, group in prefix_groups(interface).items()}
    return {"invertible": invertible + ".{name}.", **prefixes}


# prefix gate location -> the interface field naming the attention module that holds it
_GATE_ATTENTION = {"prefix_gate": "self_attention", "cross_prefix_gate": "cross_attention"}


def _attention_hub_path(interface: ModelInterface, field: str) -> str | None:
    """AdapterHub path of a layer's self- or cross-attention module (ViT: its 4.x name), or None."""
    path = interface.adapterhub.get(field, getattr(interface, field))
    return path.rstrip("?") if path else None


def _layer_hub_paths(interface: ModelInterface, layer: nn.Module | None) -> dict[str, str]:
    """Location -> AdapterHub path of the module holding it within `layer` (negative indices made concrete;
    None: any layer), for the locations that have one there. The parts of a fused projection (GPT-2's c_attn)
    share its path."""
    out = {}
    for location, spec in list(interface.residual_sites.items()) + interface.all_linear_locations():
        if layer is not None and not present(layer, spec):
            continue
        path = _hub_path(interface, location, spec, layer)
        if path is not None:
            out[location] = path
    for location, field in _GATE_ATTENTION.items():
        ours, path = getattr(interface, field), _attention_hub_path(interface, field)
        if path and (layer is None or resolve(layer, ours) is not None):
            out[location] = path
    return out


def _export_layout(interface: ModelInterface, state):
    """layer id -> (its AdapterHub key prefix "<stack>.<index>.", {location: AdapterHub path in that layer})."""
    if state is None:
        single_stack(interface, "AdapterHub export without the model's state")  # a lone id names no stack
        stack, paths = interface.hub_layers()[0].rstrip("?"), _layer_hub_paths(interface, None)
        return lambda layer_id: (f"{stack}.{layer_id}.", paths)
    offsets, _, _ = _layer_maps(interface, state)
    starts = sorted((first, hub) for hub, first in offsets.items())
    paths = [_layer_hub_paths(interface, layer) for layer in state.layers]

    def layout(layer_id: int):
        first, hub = max(entry for entry in starts if entry[0] <= layer_id)
        return f"{hub}.{layer_id - first}.", paths[layer_id]
    return layout


def state_dict_to_adapterhub(tensors: Mapping[str, torch.Tensor], name: str, interface: ModelInterface,
                             config: AdapterConfig, state=None) -> dict[str, torch.Tensor]:
    """The state dict of `model.adapterkit[name]` -> AdapterHub keys, relative to the base model.

    AdapterHub's names where the interface gives them (ViT: the transformers 4.x layout), else ours. Pass the
    model's `state` for models with several layer stacks (encoder-decoder) or sublayers addressed from the end.
    """
    _check_prefix_shift(config, interface, f"adapter {name!r}")
    layout = _export_layout(interface, state)
    shared = _shared_keys(interface)
    order = {location: i for i, (location, _) in enumerate(interface.all_linear_locations())}
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, list] = {}  # LoRA / (IA)^3 key -> [(order, location, tensor)]: a fused projection's parts
    for key, tensor in tensors.items():
        scope, rest = key.split(".", 1)
        if scope == "shared":
            module, _, param = rest.partition(".")
            if module not in shared:
                raise AdapterConfigError(f"adapter {name!r}: {key!r} has no AdapterHub counterpart")
            out[shared[module].format(name=name) + param] = tensor
            continue
        layer_id, location, param = rest.split(".", 2)
        prefix, paths = layout(int(layer_id))
        if location in interface.adapterhub_differs:
            raise AdapterConfigError(
                f"adapter {name!r}: its {location!r} projections have an AdapterHub namesake on another module in "
                f"this architecture ({interface.adapterhub_differs[location]}), so the export would not load as "
                "the same adapter; leave them out (intermediate_lora / output_lora=False) or save in the adapterkit "
                "format")
        path = paths.get(location)
        if location in order:
            _check_contiguous(interface, location, f"adapter {name!r}")
        if path is None:
            raise AdapterConfigError(f"adapter {name!r}: {location!r} (a fused or unnamed projection, or a "
                                     "sublayer-hook site the interface gives no AdapterHub name) has no AdapterHub "
                                     "name here; save in the adapterkit format")
        if location in interface.residual_sites:
            out[f"{prefix}{path}.adapters.{name}.{_bottleneck_key(param, config)}"] = tensor
        elif location.endswith("prefix_gate"):
            out[f"{prefix}{path}.prefix_tuning.prefix_gates.{name}.{param}"] = tensor
        elif param == "ia3_l":
            parts.setdefault(f"{prefix}{path}.loras.{name}.lora_B", []).append(
                (order[location], location, tensor.reshape(-1, 1)))
        else:
            parts.setdefault(f"{prefix}{path}.loras.{name}.{param}", []).append((order[location], location, tensor))
    for key, found in parts.items():
        out[key] = _fused(key, sorted(found, key=lambda part: part[0]))
    return out


def _check_contiguous(interface: ModelInterface, location: str, what: str) -> None:
    """AdapterHub splits a fused projection into contiguous blocks; a per-head split (adapterkit's DeBERTa) puts
    other rows in each part, so no conversion keeps the adapter's function."""
    spec = dict(interface.all_linear_locations()).get(location)
    if isinstance(spec, FusedSlice) and spec.per_head:
        raise AdapterConfigError(
            f"{what}: {location!r} is a per-head slice of the fused projection {spec.module!r} here, and AdapterHub "
            f"splits it into {spec.parts} contiguous blocks instead (other rows, so another function); use the "
            "interface with that layout (DeBERTa: adapterkit.interfaces.deberta.DEBERTA_ADAPTERHUB_QKV) or the "
            "adapterkit format")


def _fused(key: str, parts: list) -> torch.Tensor:
    """One AdapterHub LoRA tensor from its parts in q, k, v order (the inverse of the import's split); a gated
    LoRA's gate reads the whole projection's input, so its parts must agree."""
    tensors = [tensor for _, _, tensor in parts]
    if len(tensors) == 1:
        return tensors[0]
    if ".gate." in key:
        if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
            raise AdapterConfigError(f"{key}: the LoRA gates of {', '.join(loc for _, loc, _ in parts)} differ, but "
                                     "AdapterHub keeps one gate per fused projection; save in the adapterkit format")
        return tensors[0]
    return torch.cat(tensors, dim=0)


def write(model, stage: StagedWrite, name: str, safetensors: bool = True) -> None:
    from .. import __version__
    state = model.adapter_state
    config = state.configs[name]
    hub_config = config_to_adapterhub(config)
    tensors = state_dict_to_adapterhub(model.adapterkit[name].state_dict(), name, state.interface, config, state)
    facts = model_facts(model)
    if safetensors:
        stage.write_safetensors(SAFE_WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    else:
        stage.write_torch(WEIGHTS_NAME, tensors)
    stage.write_json(CONFIG_NAME, {
        "config": hub_config, "hidden_size": facts["hidden_size"], "model_type": facts["model_type"],
        "model_name": getattr(model.config, "_name_or_path", None) or None, "model_class": facts["model_class"],
        "name": name, "version": f"adapterkit.{__version__}",
    })


# -- reading a directory -------------------------------------------------------------------------------
def is_adapterhub(data: Mapping[str, Any]) -> bool:
    return "config" in data and "peft_type" not in data and "format" not in data


def _fix_legacy_config(source: Path, data: dict) -> dict:
    """Version fixes the `adapters` loader applies, so old checkpoints behave as they were trained."""
    config = dict(data["config"])
    version = str(data.get("version") or "")
    if not version and config.get("non_linearity") in _LEGACY_ACTIVATIONS:
        config["non_linearity"] = _LEGACY_ACTIVATIONS[config["non_linearity"]]
    if version.startswith("adapters.") and config.get("architecture") == "lora" and config.get("r") != config.get("alpha"):
        parts = version[len("adapters."):].split(".")
        if [int(p) if p.isdigit() else 0 for p in parts[:2]] < [1, 1]:
            # adapters < 1.1.0 applied LoRA with scaling 1 whatever alpha said (adapters PR #770)
            warnings.warn(f"{source}: LoRA saved by {version} ran with alpha == r; loading it with alpha={config['r']}",
                          stacklevel=3)
            config["alpha"] = config["r"]
    return config


def read(model, directory: Path, data: dict) -> Checkpoint:
    source = directory / CONFIG_NAME
    check_compatible(model, source, model_type=data.get("model_type"), hidden_size=data.get("hidden_size"))
    if not isinstance(data.get("config"), Mapping):
        raise CheckpointError(
            f"{source}: 'config' must be the adapter config as a JSON object, found {data.get('config')!r}"
        )
    name = name_from(source, data)
    if not name:
        raise CheckpointError(f"{source}: no adapter 'name'")
    config = parse_config(source, config_from_adapterhub, _fix_legacy_config(source, data))
    if model.adapter_state.interface.position_bias:
        config = with_shifted_prefix(config)  # the package's prefix semantics there (PrefixTuningConfig)
    weights_file = directory / SAFE_WEIGHTS_NAME
    if weights_file.is_file():
        weights = read_safetensors(weights_file)
    else:
        weights_file = directory / WEIGHTS_NAME
        if not weights_file.is_file():
            raise CheckpointError(
                f"{directory}: missing weights: neither {SAFE_WEIGHTS_NAME} nor {WEIGHTS_NAME} is there"
            )
        weights = read_torch_bin(weights_file)
    weights = {_rename_legacy(k): v for k, v in weights.items()}
    if (isinstance(config, BnConfig) and config.inv_adapter and data.get("type") == "text_task"
            and not any(f"invertible_adapters.{name}." in k for k in weights)):
        # old task adapters named an invertible adapter in their config without having one (as `adapters` fixes)
        config = config.replace(inv_adapter=None, inv_adapter_reduction_factor=None)
    try:
        tensors = state_dict_from_adapterhub(weights, name, model.adapter_state.interface, config,
                                             state=model.adapter_state)
    except AdapterConfigError as e:
        raise CheckpointError(f"{weights_file}: {e}") from None
    return Checkpoint(name=name, config=config, tensors=tensors, config_file=source, weights_file=weights_file,
                      format=FORMAT)


def _rename_legacy(key: str) -> str:
    for old, new in _LEGACY_KEYS.items():
        key = key.replace(old, new)
    return key


def fusion_state_dict_from_adapterhub(weights: Mapping[str, torch.Tensor], fusion_name: str,
                                      interface: ModelInterface, state=None) -> dict[str, torch.Tensor]:
    """AdapterHub AdapterFusion weights (`...layer.3.output.adapter_fusion_layer.<a,b>.query.weight`) -> the state
    dict of `model.adapterkit_fusion[<a,b>]` (`layers.3.output_adapter.query.weight`). Unknown keys raise. Pass
    the model's `state` for models with several layer stacks or sublayers addressed from the end."""
    offsets, per_layer, global_map = _layer_maps(interface, state)
    if state is None and len(interface.layers) > 1:
        raise AdapterConfigError("this architecture has several layer stacks; pass state=model.adapter_state")
    stacks = "|".join(re.escape(p) for p in sorted(offsets, key=len, reverse=True))
    pattern = re.compile(rf"^(?:.*?\.)?({stacks})\.(\d+)\.(.+?)\.adapter_fusion_layer\.{re.escape(fusion_name)}\.(.+)$")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        m = pattern.match(key)
        location = None
        if m:
            layer_id = offsets[m.group(1)] + int(m.group(2))
            table = global_map if per_layer is None else (per_layer[layer_id] if layer_id < len(per_layer) else {})
            location = next((loc for loc in table.get(m.group(3), ()) if loc in interface.residual_sites), None)
        if location is None:
            raise AdapterConfigError(f"AdapterHub weight {key!r} of fusion {fusion_name!r} has no adapterkit "
                                     "counterpart")
        out[f"layers.{layer_id}.{location}.{m.group(4)}"] = tensor
    return out


def fusion_state_dict_to_adapterhub(tensors: Mapping[str, torch.Tensor], fusion_name: str,
                                    interface: ModelInterface, state=None) -> dict[str, torch.Tensor]:
    """The state dict of `model.adapterkit_fusion[<a,b>]` -> AdapterHub keys (relative to the base model), the
    inverse of `fusion_state_dict_from_adapterhub`."""
    layout = _export_layout(interface, state)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        _, layer_id, location, param = key.split(".", 3)
        prefix, paths = layout(int(layer_id))
        if paths.get(location) is None:
            raise AdapterConfigError(f"fusion {fusion_name!r}: {location!r} has no AdapterHub name here; save it in "
                                     "the adapterkit format")
        out[f"{prefix}{paths[location]}.adapter_fusion_layer.{fusion_name}.{param}"] = tensor
    return out
