"""AdapterHub directories: read one into a validated-to-be `Checkpoint`, write one from a model's adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...errors import AdapterConfigError, CheckpointError
from ...version import __version__
from ..common import CONFIG_NAME, Checkpoint, check_compatible, model_facts, name_from, parse_config
from ..files import StagedWrite, read_weights
from .config import (config_from_adapterhub, config_to_adapterhub, fix_legacy_dict, fix_loaded, read_config,
                     relocate)
from .weights import state_dict_from_adapterhub, state_dict_to_adapterhub

FORMAT = "adapterhub"
WEIGHTS_NAME = "pytorch_adapter.bin"
SAFE_WEIGHTS_NAME = "adapter.safetensors"
# adapter-transformers 2.x weight names -> current ones (as the `adapters` loader renames them)
_LEGACY_KEYS = {"attention_text_task_adapters": "adapters", "attention_text_lang_adapters": "adapters",
                "layer_text_task_adapters": "adapters", "layer_text_lang_adapters": "adapters",
                "invertible_lang_adapters": "invertible_adapters"}
# activation names of configs written before versions were recorded (adapter-transformers 2.x)
_LEGACY_ACTIVATIONS = {"gelu": "gelu_new", "gelu_orig": "gelu"}


def write(model, stage: StagedWrite, name: str, safetensors: bool = True) -> None:
    state = model.adapter_state
    config = state.configs[name]
    if any(getattr(m, "target_modules", None) is not None for m in getattr(config, "configs", None) or [config]):
        raise AdapterConfigError(f"adapter {name!r} selects its modules by name (target_modules); the AdapterHub "
                                 "format has locations only (attn_matrices, intermediate_lora, ...): save it as "
                                 "format='peft' or 'adapterkit'")
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


def is_adapterhub(data: Mapping[str, Any]) -> bool:
    return "config" in data and "peft_type" not in data and "format" not in data


def _fix_legacy_config(source: Path, data: dict) -> dict:
    """Version fixes the `adapters` loader applies, so old checkpoints behave as they were trained."""
    config = dict(data["config"])
    version = data.get("version") or ""
    if not isinstance(version, str):
        raise CheckpointError(f"{source}: 'version' must be a string such as 'adapters.1.1.0', found {version!r}")
    if not isinstance(config.get("architecture"), (str, type(None))):
        raise CheckpointError(f"{source}: invalid adapter config: 'architecture' must be a string, found "
                              f"{config['architecture']!r}")
    if not version and isinstance(config.get("non_linearity"), str) and config["non_linearity"] in _LEGACY_ACTIVATIONS:
        config["non_linearity"] = _LEGACY_ACTIVATIONS[config["non_linearity"]]
    return fix_legacy_dict(source, config, version)


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
    config = read_config(config, model.adapter_state.interface, model.adapter_state)  # the package's semantics
    weights_file, weights = read_weights(directory, SAFE_WEIGHTS_NAME, WEIGHTS_NAME)
    weights = {_rename_legacy(k): v for k, v in weights.items()}
    config = fix_loaded(config, data, weights, name)
    try:
        relocated = relocate(config, weights, model.adapter_state, name)  # the package's placement, kept
        if relocated is not None:
            config, tensors = relocated
        else:
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
