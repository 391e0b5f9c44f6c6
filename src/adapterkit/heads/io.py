"""Saving and loading prediction heads.

Ours: `head_config.json` (`format: "adapterkit.head"`, the head config under `config`) + `head.safetensors`
(keys relative to the head: `1.weight`). Read as well: AdapterHub heads as the `adapters` package and
adapter-transformers write them: `head_config.json` + `model_head.safetensors` or `pytorch_model_head.bin`,
keyed `heads.<name>.1.weight` (flexible heads) or by the task model's names (`classifier.weight`, converted via
the interface's `task_heads`). `.bin` files are read with `torch.load(weights_only=True)` only.

Loading validates everything (config, file, keys, shapes) on a head built off the model before it touches the
model; saving is one commit (io/staging.py; with `save_adapter`, the same commit as the adapter's), so a failed
or interrupted save leaves the previous files intact. LM decoders tied to the input embeddings are never saved
(they are the base's weights).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from ..errors import AdapterError, CheckpointError
from ..io import files
from ..io.common import reading
from ..io.files import read_safetensors, read_torch_bin
from ..io.staging import one_commit, recover
from ..io.validate import check_floating
from ..naming import check_loaded_name
from .base import PredictionHead
from .conversion import rename_task_weights, task_head_config, task_head_for
from .registry import build_head

logger = logging.getLogger(__name__)

HEAD_CONFIG_NAME = "head_config.json"
HEAD_WEIGHTS_NAME = "head.safetensors"
HUB_SAFE_WEIGHTS_NAME = "model_head.safetensors"
HUB_WEIGHTS_NAME = "pytorch_model_head.bin"
HEAD_FILES = (HEAD_CONFIG_NAME, HEAD_WEIGHTS_NAME, HUB_SAFE_WEIGHTS_NAME, HUB_WEIGHTS_NAME)  # what a Hub load fetches
FORMAT = "adapterkit.head"
FORMAT_VERSION = 1


def has_head(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a head (ours or AdapterHub's) that `load_head` can read."""
    d = Path(directory)
    return (d / HEAD_CONFIG_NAME).is_file() and any(
        (d / n).is_file() for n in (HEAD_WEIGHTS_NAME, HUB_SAFE_WEIGHTS_NAME, HUB_WEIGHTS_NAME))


# -- saving --------------------------------------------------------------------------------------------
def save_head(model, directory: str | os.PathLike, name: str) -> None:
    """Write head `name` of an AdapterModel to `directory` (created if needed) as one commit, or as part of the
    `one_commit` open on `directory`."""
    heads = _heads_of(model)
    if name not in heads:
        raise AdapterError(f"cannot save head {name!r}: the model has no such head; heads: "
                           f"{', '.join(map(repr, heads)) or '(none)'}")
    head = heads[name]
    directory = Path(directory)
    tied = set(head.tied_parameters())
    weights = {k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items() if k not in tied}
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "config": head.config,
        "model_type": getattr(model.config, "model_type", None),
        "hidden_size": getattr(model.config, "hidden_size", None), "model_class": type(model).__name__,
        "tied_weights": sorted(tied),
    }
    with one_commit(directory) as stage:
        stage.write_with(HEAD_WEIGHTS_NAME, lambda path: save_file(weights, path, metadata={"format": "pt"}))
        stage.write_json(HEAD_CONFIG_NAME, config)


# -- loading -------------------------------------------------------------------------------------------
def load_head(model, directory: str | os.PathLike, load_as: str | None = None, set_active: bool = True) -> str:
    """Add the head saved in `directory` to an AdapterModel (replacing one of the same name); returns its name."""
    _heads_of(model)
    directory = Path(directory)
    recover(directory)  # a save a dead process committed but did not finish
    saved = read_json(directory / HEAD_CONFIG_NAME, "head config")
    with reading(directory):
        head = _read_head(model, saved, directory, load_as)
    model.add_prediction_head(head, overwrite_ok=True, set_active=set_active)
    return head.name


def _read_head(model, saved: Mapping[str, Any], directory: Path, load_as: str | None) -> PredictionHead:
    """The saved head, built and loaded off the model (checked against the file on the meta device first)."""
    with torch.device("meta"):  # sizes only: a config that declares a huge head allocates nothing
        shape, weights_path = _head_from_saved(model, saved, directory, load_as)
    weights = read_weights(weights_path)
    weights = _head_keys(model, saved, weights, weights_path)
    embeddings = model.tied_input_embeddings()
    check_head_weights(shape, weights, source=str(weights_path), embeddings=embeddings)
    head, _ = _head_from_saved(model, saved, directory, load_as)  # the file fits: now build it for real
    load_head_weights(head, weights, source=str(weights_path), embeddings=embeddings)
    return head


def _heads_of(model):
    heads = getattr(model, "heads", None)
    if not isinstance(heads, torch.nn.ModuleDict):
        raise AdapterError(
            f"{type(model).__name__} has no flexible heads; load the model with adapterkit.AutoAdapterModel "
            "to save or load prediction heads"
        )
    return heads


def read_json(path: Path, what: str) -> dict:
    """The JSON object in `path`, read by the shared reader (io.files: bounded nesting, CheckpointError)."""
    return files.read_json(path, what, name_what=True)


def _head_from_saved(model, saved: Mapping[str, Any], directory: Path, load_as: str | None
                     ) -> tuple[PredictionHead, Path]:
    """Check the saved config against the model and build the (not yet installed) head."""
    config_path = directory / HEAD_CONFIG_NAME
    candidates = ([HEAD_WEIGHTS_NAME] if saved.get("format") == FORMAT
                  else [HUB_SAFE_WEIGHTS_NAME, HUB_WEIGHTS_NAME])
    weights_path = next((directory / n for n in candidates if (directory / n).is_file()), None)
    if weights_path is None:
        raise AdapterError(f"{directory}: missing head weights; expected {' or '.join(candidates)}")
    model_type = getattr(model.config, "model_type", None)
    if saved.get("model_type") not in (None, model_type):
        raise AdapterError(f"{config_path}: head was saved for model_type {saved['model_type']!r}, "
                           f"this model is {model_type!r}")
    hidden = getattr(model.config, "hidden_size", None)
    if saved.get("hidden_size") not in (None, hidden):
        raise AdapterError(f"{config_path}: head was saved for hidden_size {saved['hidden_size']}, "
                           f"this model has {hidden}")
    head_config = saved.get("config")
    if head_config is None:  # AdapterHub: the head of a transformers task model, by its own key names
        task = task_head_for(model.adapter_state.interface, saved.get("model_class"))
        if task is None:
            raise AdapterError(f"{config_path}: no flexible-head config and no conversion for model_class "
                               f"{saved.get('model_class')!r}")
        head_config = task_head_config(task, model.config, label2id=saved.get("label2id"),
                                       num_labels=saved.get("num_labels"))
    if saved.get("format") == FORMAT:
        version = saved.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(f"{config_path}: format_version {version!r} is not supported by this adapterkit "
                                  f"(reads integers 1 to {FORMAT_VERSION})")
    saved_name = saved.get("name")
    if saved_name is not None and not isinstance(saved_name, str):
        raise CheckpointError(f"{config_path}: 'name' must be a string, found {saved_name!r}")
    name = load_as if load_as is not None else saved_name or "default"
    check_loaded_name(name, load_as, config_path, role=" for a prediction head")
    try:
        head = build_head(name, head_config, model.config)
    except AdapterError as e:
        raise AdapterError(f"{config_path}: {e}") from None
    return head, weights_path


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors or a weights-only `.bin` file (io/files.py: never runs pickled code)."""
    return read_safetensors(path) if path.suffix == ".safetensors" else read_torch_bin(path)


def _head_keys(model, saved: Mapping[str, Any], weights: dict, path: Path) -> dict:
    """Weights keyed relative to the head, whatever the format named them."""
    if saved.get("format") == FORMAT:
        return weights
    if saved.get("config") is None:
        task = task_head_for(model.adapter_state.interface, saved.get("model_class"))
        return rename_task_weights(task, weights, source=str(path))
    prefix = f"heads.{saved.get('name')}."
    wrong = [k for k in weights if not k.startswith(prefix)]
    if wrong:
        raise AdapterError(f"{path}: weight(s) {wrong[:3]} are not under {prefix!r}, the head named in "
                           f"{HEAD_CONFIG_NAME}")
    return {k[len(prefix):]: v for k, v in weights.items()}


def load_head_weights(head: PredictionHead, weights: Mapping[str, torch.Tensor], *, source: str,
                      embeddings: torch.nn.Module | None = None) -> None:
    """Load `weights` into a head not yet on a model; keys and shapes must match exactly (errors name `source`).

    A tied LM decoder weight in the file (AdapterHub saves it) is skipped: the head uses the model's embeddings.
    """
    weights = dict(weights)
    tied = _tied_keys(head, embeddings)
    for key in tied:
        saved = weights.pop(key, None)
        if saved is not None and embeddings is not None and not torch.equal(
                saved.to(embeddings.weight.dtype), embeddings.weight.detach().cpu()):
            logger.warning("%s: %s differs from the model's input embeddings it is tied to; the embeddings are "
                           "kept", source, key)
    _check_fit(head, weights, tied, source)
    head.load_state_dict(weights, strict=False)


def check_head_weights(head: PredictionHead, weights: Mapping[str, torch.Tensor], *, source: str,
                       embeddings: torch.nn.Module | None = None) -> None:
    """Raise unless `weights` fit `head` (keys, shapes, floating point); the head may be on the meta device."""
    tied = _tied_keys(head, embeddings)
    _check_fit(head, {k: v for k, v in weights.items() if k not in tied}, tied, source)


def _check_fit(head: PredictionHead, weights: Mapping[str, torch.Tensor], tied: list[str], source: str) -> None:
    expected = {k: v for k, v in head.state_dict().items() if k not in tied}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise AdapterError(
            f"{source}: weights do not fit head {head.name!r} ({head.config['head_type']}): "
            + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                    f"unexpected {unexpected}" if unexpected else "") if p)
        )
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in sorted(weights.items())
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise AdapterError(f"{source}: weight shapes do not fit head {head.name!r} (a head of another size or "
                           f"model?): {', '.join(wrong)}")
    check_floating(weights, expected, source)


def _tied_keys(head: PredictionHead, embeddings) -> list[str]:
    """Decoder keys that will be tied once the head is installed (LM heads on models that tie embeddings)."""
    return [f"{len(head) - 1}.weight"] if embeddings is not None and hasattr(head, "tie_to") else []
