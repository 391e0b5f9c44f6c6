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
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..blocks import Fuse
from ..errors import AdapterError
from ..fusion.config import resolve_fusion_config
from ..fusion.container import get_fusion
from ..naming import check_loaded_name
from ..version import __version__
from .adapterhub import fusion_state_dict_from_adapterhub, fusion_state_dict_to_adapterhub
from .files import read_json
from .staging import one_commit, recover
from .validate import check_floating

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
        if safetensors:
            file = HUB_WEIGHTS[0]
        else:
            file, write = HUB_WEIGHTS[1], lambda tmp: torch.save(weights, tmp)
    with one_commit(directory) as stage:
        stage.write_with(file, write)
        stage.write_bytes(CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode("utf-8"))


def _read_weights(directory: Path) -> tuple[dict, bool]:
    """(weights, whether they are AdapterHub-named)."""
    if (directory / WEIGHTS_NAME).is_file():
        return load_file(directory / WEIGHTS_NAME), False
    for file in HUB_WEIGHTS:
        path = directory / file
        if path.is_file():
            if path.suffix == ".safetensors":
                return load_file(path), True
            return torch.load(path, map_location="cpu", weights_only=True), True
    raise AdapterError(f"{directory} holds no AdapterFusion weights; expected {WEIGHTS_NAME} (adapterkit) or "
                       f"{' / '.join(HUB_WEIGHTS)} (AdapterHub)")


def load_fusion(model, directory: Path, load_as: str | None, set_active: bool) -> str:
    recover(directory)  # a save a dead process committed but did not finish
    if not (directory / CONFIG_NAME).is_file():
        raise AdapterError(f"{directory} is not an AdapterFusion directory: {CONFIG_NAME} is missing")
    data = read_json(directory / CONFIG_NAME, "AdapterFusion config")
    saved_name = data.get("name")
    names = data.get("adapter_names") or (saved_name.split(",") if saved_name else None)
    if not saved_name or not names:
        raise AdapterError(f"{directory / CONFIG_NAME} names no fusion ('name') or fused adapters ('adapter_names')")
    hidden = data.get("hidden_size")
    if hidden is not None and hidden != model.adapter_state.hidden_size:
        raise AdapterError(f"the fusion in {directory} was saved for hidden size {hidden}, this model has "
                           f"{model.adapter_state.hidden_size}")
    weights, from_hub = _read_weights(directory)
    if from_hub:
        weights = fusion_state_dict_from_adapterhub(weights, saved_name, model.adapter_state.interface,
                                                    model.adapter_state)
    name = load_as if load_as is not None else saved_name
    check_loaded_name(name, load_as, directory / CONFIG_NAME, "fusion")
    config = resolve_fusion_config(data["config"])
    # checked on a scratch fusion first: a failed load leaves the model (and a fusion of this name) as it was
    scratch = f"{name[:64]}__adapterkit_loading"
    model.add_adapter_fusion(names, config, name=scratch, overwrite_ok=True)
    try:
        _load_weights(get_fusion(model, scratch), weights, directory, names)
    finally:
        model.delete_adapter_fusion(scratch)
    model.add_adapter_fusion(names, config, name=name, overwrite_ok=True)
    _load_weights(get_fusion(model, name), weights, directory, names)
    if set_active:
        model.set_active_adapters(Fuse(*names, name=name))
    return name


def _load_weights(fusion, weights: dict, directory: Path, names: list[str]) -> None:
    expected = fusion.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise AdapterError(f"the AdapterFusion weights in {directory} do not fit fusion {names} on this model: "
                           f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                           f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
    check_floating(weights, expected, f"the AdapterFusion weights in {directory}")
    try:
        fusion.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})
    except RuntimeError as exc:  # shapes that do not fit
        raise AdapterError(f"the AdapterFusion weights in {directory} do not fit this model: {exc}") from None
