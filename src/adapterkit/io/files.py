"""Safe reads shared by every checkpoint format (and, re-exported, the staged writes of `staging.py`).

Writes are staged and committed at once (staging.py: a crash leaves the previous save or the new one, never a mix).
Reads turn every failure into a `CheckpointError` naming the file; `.bin` files are only read with
`torch.load(weights_only=True)`, so nothing in a checkpoint is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import os  # noqa: F401  (tests patch files.os)
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from ..errors import CheckpointError
from .staging import StagedWrite, atomic_write, one_commit, recover, safetensors_bytes  # noqa: F401 (re-exported)


# -- reading ---------------------------------------------------------------------------------------
def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing {what} (the directory holds: {_listing(path.parent)})")
    return path


def _listing(directory: Path) -> str:
    try:
        names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    except OSError:
        return "(unreadable or not a directory)"
    return ", ".join(names) or "(nothing)"


def read_json(path: Path, what: str = "config") -> dict:
    require_file(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); the file is corrupted or truncated") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_bytes(path: Path, what: str) -> bytes:
    require_file(path, what)
    return path.read_bytes()


def read_safetensors(path: Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on CPU). A truncated or corrupted file is a CheckpointError."""
    data = read_bytes(path, "weights file") if data is None else data
    try:
        return dict(safetensors_load(data))
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({e}); the file is truncated or corrupted"
        ) from None


def read_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict read with `torch.load(weights_only=True)`: plain tensors only, no code runs."""
    require_file(path, "weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds more than plain tensors and would run code or build "
            f"arbitrary objects ({_unpickler_reason(e)}); only tensor state dicts are accepted (prefer safetensors)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({e}); the file is truncated "
                              "or corrupted") from None
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise CheckpointError(f"{path}: expected a state dict (str -> tensor), found {type(obj).__name__}")
    return dict(obj)


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's refusal that says what was refused (not its advice to retry with weights_only=False)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if "GLOBAL" in line or "Unsupported" in line or "unpickler" in line.lower()
                and "weights_only" not in line]
    return (specific or ["not a plain tensor pickle"])[0].split(". Please")[0].rstrip(".")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_weights(directory: Path, safe_name: str, bin_name: str) -> tuple[Path, dict]:
    """(the file read, its tensors): `safe_name` (safetensors) if present, else `bin_name` (a weights-only torch
    file); a clear error when neither is there."""
    weights_file = directory / safe_name
    if weights_file.is_file():
        return weights_file, read_safetensors(weights_file)
    weights_file = directory / bin_name
    if not weights_file.is_file():
        raise CheckpointError(f"{directory}: missing weights: neither {safe_name} nor {bin_name} is there")
    return weights_file, read_torch_bin(weights_file)

