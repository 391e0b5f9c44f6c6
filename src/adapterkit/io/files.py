"""Atomic writes and safe reads shared by every checkpoint format.

Writes are staged: every file of a save goes to a temp file in its target directory first (fsynced), and only when
all of them are complete are they moved into place with `os.replace`. A crash while writing leaves the previous save
untouched. Reads turn every failure into a `CheckpointError` naming the file; `.bin` files are only read with
`torch.load(weights_only=True)`, so nothing in a checkpoint is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from ..errors import CheckpointError


class StagedWrite:
    """Collect the files of one save as temp files; `commit()` moves them into place, `abort()` removes them.

        with StagedWrite(directory) as stage:
            stage.write_json("adapter_config.json", config)
            stage.write_safetensors("adapter.safetensors", tensors)
        # committed here; on an exception nothing in `directory` changed

    Files are committed in the order they were staged, so stage the file that "completes" a save (the config,
    which readers open first) last.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._staged: list[tuple[Path, Path]] = []  # (temp, final)

    def __enter__(self) -> "StagedWrite":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def write_bytes(self, filename: str, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".tmp", dir=self.directory)
        tmp_path = Path(tmp)
        self._staged.append((tmp_path, self.directory / filename))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self.directory / filename

    def write_json(self, filename: str, obj: Any) -> Path:
        return self.write_bytes(filename, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def write_safetensors(self, filename: str, tensors: Mapping[str, torch.Tensor],
                          metadata: Mapping[str, str] | None = None) -> Path:
        return self.write_bytes(filename, safetensors_bytes(tensors, metadata))

    def write_torch(self, filename: str, tensors: Mapping[str, torch.Tensor]) -> Path:
        """A `.bin` of plain tensors (AdapterHub's older style); `torch.load(weights_only=True)` reads it."""
        import io
        buffer = io.BytesIO()
        torch.save({k: _plain(v) for k, v in tensors.items()}, buffer)
        return self.write_bytes(filename, buffer.getvalue())

    def commit(self) -> None:
        try:
            while self._staged:
                tmp, final = self._staged[0]
                os.replace(tmp, final)
                self._staged.pop(0)
        finally:
            self.abort()  # a failed rename leaves no temp files behind
        _fsync_directory(self.directory)

    def abort(self) -> None:
        for tmp, _ in self._staged:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self._staged = []


def atomic_write(target: Path, write: Callable[[str], Any]) -> None:
    """`write(tmp_path)` into a temp file next to `target`, flush it to disk, then replace `target` with it.

    A crash or error at any point leaves `target` as it was (and no temp file behind on errors).
    """
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous copy that shares memory with nothing (safetensors refuses shared storage)."""
    return tensor.detach().to("cpu").contiguous().clone()


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    return safetensors_save({k: _plain(v) for k, v in tensors.items()}, metadata=dict(metadata or {}))


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


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

