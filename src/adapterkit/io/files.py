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
from pathlib import Path
from typing import Any, Mapping

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


# Deepest nesting of lists / objects accepted in a JSON file. Real configs nest a handful of levels (a union's
# member configs, a per-layer reduction_factor); json.loads itself dies with RecursionError near 1000.
MAX_JSON_DEPTH = 64


def parse_json(text: str, source: Any, what: str | None = None) -> Any:
    """JSON text -> value; a syntax error or nesting deeper than MAX_JSON_DEPTH is a CheckpointError naming
    `source` (and `what` it holds). Every reader of adapterkit's JSON files goes through here."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{source}: {what + ' is ' if what else ''}not valid JSON ({e}); the file is "
                              "corrupted or truncated") from None
    except RecursionError:
        data = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = json_depth(data, MAX_JSON_DEPTH + 1)
    if depth > MAX_JSON_DEPTH:
        raise CheckpointError(f"{source}: {what + ': ' if what else ''}lists / objects nest deeper than {MAX_JSON_DEPTH} levels; "
                              "not an adapterkit, AdapterHub or PEFT file")
    return data


def json_depth(value: Any, stop: int) -> int:
    """How deep lists / dicts nest in `value` (0 for a scalar), without recursion; counting stops at `stop`."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest >= stop:
            return deepest
        todo.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: Path, what: str = "config", name_what: bool = False) -> dict:
    """A JSON object from `path` (see `parse_json`); any other top-level value is a CheckpointError.
    `name_what`: say `what` in the errors too ("head config is not valid JSON")."""
    require_file(path, what)
    said = what if name_what else None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: {said + ' is ' if said else ''}not valid JSON ({e}); the file is corrupted "
                              "or truncated") from None
    data = parse_json(text, path, said)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {said + ' ' if said else ''}expected a JSON object, found "
                              f"{type(data).__name__}")
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
    except Exception as e:  # noqa: BLE001 - torch's unpickler on corrupt bytes raises anything (IndexError, ...)
        raise CheckpointError(f"{path}: not a readable weights file (PyTorch: {type(e).__name__}: {e}); the file is "
                              "truncated or corrupted") from None
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

