"""save_adapter / load_adapter / save_all_adapters: format choice, validation before any change.

Loading reads and converts everything, then checks it against the modules its config would build (io.validate)
and only then adds the adapter: on any error the model is exactly as before. This layer knows only adapters:
model classes that keep more per adapter (an AdapterModel's heads) extend the model's own `save_adapter` /
`load_adapter`, writing their files after `save_adapter` and reading theirs in `load_adapter`'s `after_add`
callback, which runs once the adapter is in (a failure there takes the adapter out again).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import AdapterError, CheckpointError
from ..naming import check_loaded_name, child_directory, is_valid_name
from . import adapterhub, native, peft
from .common import CONFIG_NAME, Checkpoint, reading
from .files import read_json
from .staging import one_commit, recover
from .validate import check_state_dict

FORMATS = {native.FORMAT: native, adapterhub.FORMAT: adapterhub, peft.FORMAT: peft}
_DETECT = ((native.FORMAT, native.is_native), (peft.FORMAT, peft.is_peft), (adapterhub.FORMAT, adapterhub.is_adapterhub))


def _check_format(format: str | None, allow_none: bool) -> None:
    if (format is None and not allow_none) or (format is not None and format not in FORMATS):
        raise AdapterError(f"unknown checkpoint format {format!r}; allowed: {', '.join(FORMATS)}"
                           + (" or None (detect)" if allow_none else ""))


# -- saving --------------------------------------------------------------------------------------------
def save_adapter(model, save_directory: str | os.PathLike, adapter_name: str, format: str = native.FORMAT,
                 safetensors: bool = True) -> None:
    """Write one adapter to `save_directory` as one commit (staging.py), or as part of the `one_commit` open on
    that directory (a model class's own save_adapter adds its files to it)."""
    model.adapter_state.require(adapter_name)
    _check_format(format, allow_none=False)
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise AdapterError(f"{directory} exists and is not a directory; save_adapter writes a directory")
    with one_commit(directory) as stage:
        if format == adapterhub.FORMAT:
            adapterhub.write(model, stage, adapter_name, safetensors=safetensors)
        else:
            if not safetensors:
                raise AdapterError(f"the {format} format is written as safetensors only (safetensors=True)")
            FORMATS[format].write(model, stage, adapter_name)


def save_all_adapters(model, save_directory: str | os.PathLike, format: str = native.FORMAT,
                      **options) -> list[str]:
    """Each adapter in its own subfolder `save_directory/<name>`; returns the names.

    Saved through the model's own `save_adapter` (given `format` and `options`), so whatever a model class adds
    to a save is saved too; each subfolder is its own commit.
    """
    names = list(model.adapter_state.configs)
    directories = [child_directory(save_directory, name) for name in names]  # all checked before any write
    for name, directory in zip(names, directories):
        model.save_adapter(directory, name, format=format, **options)
    return names


# -- loading -------------------------------------------------------------------------------------------
def detect_format(data: dict, source: Path) -> str:
    for name, test in _DETECT:
        if test(data):
            return name
    raise CheckpointError(
        f"{source}: not a recognised adapter config: expected 'format': 'adapterkit' (adapterkit), 'peft_type' "
        "(PEFT) or 'config' with the adapter config (AdapterHub)"
    )


def read_checkpoint(model, path: str | os.PathLike, format: str | None = None) -> Checkpoint:
    """Read and convert a checkpoint directory; the model is only consulted, never changed."""
    _check_format(format, allow_none=True)
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such adapter directory")
    recover(directory)  # a save a dead process committed but did not finish
    data = read_json(directory / CONFIG_NAME, "adapter config")
    found = detect_format(data, directory / CONFIG_NAME)
    if format is not None and format != found:
        raise CheckpointError(f"{directory / CONFIG_NAME}: is in {found} format, not {format}")
    with reading(directory):
        return FORMATS[found].read(model, directory, data)


def load_adapter(model, path: str | os.PathLike, load_as: str | None = None, set_active: bool = False,
                 format: str | None = None, overwrite_ok: bool = False,
                 after_add: Callable[[str, Checkpoint], None] | None = None,
                 folder_name: str | None = None) -> str:
    """Read, validate, then add the adapter; returns the adapter's name on the model.

    `folder_name`: what a PEFT checkpoint (named after its folder) is called when its folder's own name is not
    meaningful (a Hub snapshot's commit hash); ignored when not a valid adapter name.

    `after_add(name, checkpoint)` runs once the adapter and its weights are in, before `set_active` activates
    it; if it raises, the adapter is deleted again and the error propagates.
    """
    ckpt = read_checkpoint(model, path, format)
    name = load_as if load_as is not None else ckpt.name  # load_as='' is refused, not ignored
    if load_as is None and ckpt.format == peft.FORMAT and folder_name is not None and is_valid_name(folder_name):
        name = folder_name
    check_loaded_name(name, load_as, ckpt.config_file)
    state = model.adapter_state
    if name in state.configs and not overwrite_ok:
        raise AdapterError(
            f"an adapter named {name!r} already exists; pass load_as=<another name> or overwrite_ok=True"
        )
    with reading(ckpt.config_file):
        check_state_dict(state, name, ckpt.config, ckpt.tensors, str(ckpt.weights_file))
    model.add_adapter(name, config=ckpt.config, overwrite_ok=overwrite_ok)
    try:  # the weights were validated above; after_add should validate what it loads before changing the model
        model.adapterkit[name].load_state_dict(ckpt.tensors, strict=True)
        if after_add is not None:
            after_add(name, ckpt)
    except Exception:  # keep the model consistent: take the adapter out again
        model.delete_adapter(name)
        raise
    if set_active:
        model.set_active_adapters(name)
    return name
