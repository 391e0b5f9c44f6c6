"""Saving and loading AdapterFusion layers.

Ours: `adapter_fusion_config.json` (name, fused adapters, config, model type, hidden size) and
`adapter_fusion.safetensors` (keys `layers.<i>.<location>.<param>`), written as one commit (staging.py, or as
part of the `one_commit` open on the directory), so a failed save leaves the previous files intact.
AdapterHub's (adapter-transformers / `adapters`): the same config file and `pytorch_model_adapter_fusion.bin`
(read with `torch.load(weights_only=True)`) or `model_adapter_fusion.safetensors`, keys named after the model's
modules (converted by `io.adapterhub`, both ways: `format="adapterhub"` writes the safetensors variant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import AdapterError, CheckpointError
from ..fusion.config import AdapterFusionConfig, resolve_fusion_config
from ..fusion.container import get_fusion
from ..version import __version__
from .adapterhub import fusion_state_dict_from_adapterhub, fusion_state_dict_to_adapterhub
from .common import check_compatible, parse_config, reading
from .files import read_json, read_safetensors, read_weights
from .staging import one_commit, recover
from .validate import fit_problems

CONFIG_NAME = "adapter_fusion_config.json"
WEIGHTS_NAME = "adapter_fusion.safetensors"
HUB_WEIGHTS = ("model_adapter_fusion.safetensors", "pytorch_model_adapter_fusion.bin")


FORMATS = ("adapterkit", "adapterhub")


def save_fusion(model, directory: Path, name: str, meta_dict: dict | None, format: str = "adapterkit",
                safetensors: bool = True) -> None:
    if format not in FORMATS:
        raise AdapterError(f"unknown AdapterFusion format {format!r}; allowed: {', '.join(FORMATS)}")
    if not safetensors and format != "adapterhub":
        raise AdapterError("safetensors=False (a .bin file) is for format='adapterhub' only")
    fusion = get_fusion(model, name)
    if fusion is None:
        raise AdapterError(f"no AdapterFusion named {name!r} on this model")

    config = {
        "format": format, "version": __version__, "name": name, "adapter_names": fusion.adapter_names,
        "config": fusion.config.to_dict(), "model_type": getattr(model.config, "model_type", None),
        "hidden_size": model.adapter_state.hidden_size, "model_class": type(model).__name__, **(meta_dict or {}),
    }
    weights = {k: v.detach().to("cpu").contiguous() for k, v in fusion.state_dict().items()}
    file, write = WEIGHTS_NAME, lambda tmp: save_file(weights, tmp, metadata={"format": "pt"})
    if format == "adapterhub":  # converted (or refused) before anything is written
        state = model.adapter_state
        weights = fusion_state_dict_to_adapterhub(weights, name, state.interface, state)
        # From a model around a base model (an AdapterModel: `model.bert`), keys carry the base model's prefix,
        # as the package writes them: its fusion loader (unlike its adapter loader) loads unprefixed keys into the
        # base model only when the model is that base model, and skips them silently otherwise.
        prefix = getattr(model, "base_model_prefix", "")
        if prefix and isinstance(getattr(model, prefix, None), torch.nn.Module):
            weights = {f"{prefix}.{k}": v for k, v in weights.items()}
        if safetensors:
            file = HUB_WEIGHTS[0]
        else:
            file, write = HUB_WEIGHTS[1], lambda tmp: torch.save(weights, tmp)
    with one_commit(directory) as stage:
        stage.write_with(file, write)
        stage.write_bytes(CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode("utf-8"))


@dataclass
class FusionCheckpoint:
    """An AdapterFusion read from disk and converted to adapterkit's keys, not yet on any model."""

    name: str
    adapter_names: list[str]
    config: AdapterFusionConfig
    weights: dict[str, torch.Tensor]
    config_file: Path
    weights_file: Path


def read_fusion(model, directory: Path) -> FusionCheckpoint:
    """Read, check against the model's facts and convert a fusion directory; the model is only consulted.

    Every problem is a CheckpointError naming the file (the adapter loader's helpers: io/files.py, io/common.py)."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such AdapterFusion directory")
    recover(directory)  # a save a dead process committed but did not finish
    source = directory / CONFIG_NAME
    if not source.is_file():
        raise CheckpointError(f"{directory}: is not an AdapterFusion directory: {CONFIG_NAME} is missing")
    data = read_json(source, "AdapterFusion config")
    saved_name = data.get("name")
    if not isinstance(saved_name, str) or not saved_name.strip():
        raise CheckpointError(f"{source}: 'name' must be the fusion's name (a non-empty string), found "
                              f"{saved_name!r}")
    names = data.get("adapter_names", saved_name.split(","))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise CheckpointError(f"{source}: 'adapter_names' must be a non-empty list of adapter names, found "
                              f"{names!r}")
    check_compatible(model, source, model_type=data.get("model_type"), hidden_size=data.get("hidden_size"))
    if "config" not in data:
        raise CheckpointError(f"{source}: no AdapterFusion config ('config': 'dynamic', 'static' or an object)")
    config = parse_config(source, resolve_fusion_config, data["config"], what="AdapterFusion config")
    weights_file, weights, from_hub = _read_weights(directory)
    if from_hub:
        try:
            with reading(weights_file):
                weights = fusion_state_dict_from_adapterhub(weights, saved_name, model.adapter_state.interface,
                                                            model.adapter_state)
        except AdapterError as e:
            raise CheckpointError(f"{weights_file}: {e}") from None
    return FusionCheckpoint(saved_name, list(names), config, weights, source, weights_file)


def _read_weights(directory: Path) -> tuple[Path, dict, bool]:
    """(the file, its weights, whether they are AdapterHub-named)."""
    if (directory / WEIGHTS_NAME).is_file():
        return directory / WEIGHTS_NAME, read_safetensors(directory / WEIGHTS_NAME), False
    if any((directory / file).is_file() for file in HUB_WEIGHTS):
        return (*read_weights(directory, *HUB_WEIGHTS), True)
    raise CheckpointError(f"{directory}: holds no AdapterFusion weights; expected {WEIGHTS_NAME} (adapterkit) or "
                          f"{' / '.join(HUB_WEIGHTS)} (AdapterHub)")


def load_fusion_weights(fusion, ckpt: FusionCheckpoint) -> None:
    """Load the checkpoint's weights into a fusion not yet on the model; keys, shapes and dtypes must fit."""
    expected = fusion.state_dict()
    weights = ckpt.weights
    problems = fit_problems(weights, expected)
    if problems:
        raise CheckpointError(f"{ckpt.weights_file}: its weights do not fit fusion {ckpt.adapter_names} on this model "
                              f"({'; '.join(problems)})")
    fusion.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()}, strict=True)
