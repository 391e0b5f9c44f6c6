"""One save, one commit: the files of a save (adapter, head, fusion) replace the previous ones all or none.

Each file is first written to a temp file in the target directory and fsynced. The commit point is one rename:
a journal (`.adapterkit-commit.json`, the list of temp -> final names) moved into place. Then the temp files are
renamed over the final names and the journal is removed. A process that dies before the journal's rename leaves
the previous save (and temp files, which the next save removes); one that dies after it leaves a commit that
whoever opens the directory next finishes (`recover`, at the start of every adapterkit save and load), as SQLite
does with a hot journal. So adapterkit never reads a mix of two saves, and a committed directory holds only the
formats' own files (AdapterHub and PEFT read it as before).

Saves into one directory join one commit while `one_commit(directory)` is open: `save_adapter` writes adapter +
head that way; wrap it and `save_adapter_fusion` in `one_commit` to commit all three together.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors.torch import save as safetensors_save

from ..errors import AdapterError, CheckpointError

JOURNAL = ".adapterkit-commit.json"
_TEMP = re.compile(r"^\..+\.(\d+)-[a-z0-9_]{8}\.tmp$")   # ".<file>.<pid>-<random>.tmp"
_OLD_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")     # earlier adapterkit versions: no pid
_OPEN: ContextVar[dict[str, "StagedWrite"]] = ContextVar("adapterkit_open_commits", default={})


class StagedWrite:
    """Collect the files of one save as temp files; `commit()` makes them the directory's files at once.

        with StagedWrite(directory) as stage:
            stage.write_json("adapter_config.json", config)
            stage.write_safetensors("adapter.safetensors", tensors)
        # committed here; on an exception nothing in `directory` changed

    Files are moved into place in the order they were staged (the config, which readers open first, last), so
    readers that do not know the journal (AdapterHub, PEFT) also see a complete save once the commit is done.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._staged: dict[str, Path] = {}  # final name -> temp file, in staging order
        self._prepared = False
        self.failed = False  # a save that joined this commit raised: commit nothing

    def __enter__(self) -> "StagedWrite":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.failed:
            self.commit()
            return
        self.abort()
        if exc_type is None:
            raise AdapterError(f"{self.directory}: a save that was part of this commit failed, so nothing was "
                               "committed; the previous files are intact")

    def _new_temp(self, filename: str) -> tuple[int, Path]:
        if not filename or os.sep in filename or (os.altsep and os.altsep in filename) or filename in (".", ".."):
            raise AdapterError(f"{filename!r} is not a plain file name; a save writes files into its directory")
        if not self._prepared:  # once per save: finish an interrupted commit, drop what crashed saves left
            self.directory.mkdir(parents=True, exist_ok=True)
            recover(self.directory)
            remove_stale_temps(self.directory)
            self._prepared = True
        fd, name = tempfile.mkstemp(prefix=f".{filename}.{os.getpid()}-", suffix=".tmp", dir=self.directory)
        old = self._staged.pop(filename, None)  # staged twice: the later one wins
        if old is not None:
            old.unlink(missing_ok=True)
        self._staged[filename] = Path(name)
        return fd, Path(name)

    def write_bytes(self, filename: str, data: bytes) -> Path:
        fd, _ = self._new_temp(filename)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self.directory / filename

    def write_with(self, filename: str, write: Callable[[str], Any]) -> Path:
        """`write(temp_path)` writes the file itself (e.g. safetensors' `save_file`); it is then fsynced."""
        fd, tmp = self._new_temp(filename)
        os.close(fd)
        write(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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

    def staged_names(self) -> list[str]:
        """The file names staged so far (what this commit will write)."""
        return list(self._staged)

    def commit(self) -> None:
        if not self._staged:
            return
        entries = [[tmp.name, final] for final, tmp in self._staged.items()]
        journal = None
        try:
            fd, journal = tempfile.mkstemp(prefix=f"{JOURNAL}.{os.getpid()}-", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps({"format": "adapterkit.commit", "files": entries}).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(journal, self.directory / JOURNAL)  # the commit point
        except BaseException:
            if journal is not None:
                Path(journal).unlink(missing_ok=True)
            self.abort()
            raise
        self._staged = {}  # the journal owns the temp files now: an error from here on is finished by `recover`
        _fsync_directory(self.directory)
        _roll_forward(self.directory, entries)

    def abort(self) -> None:
        for tmp in self._staged.values():
            tmp.unlink(missing_ok=True)
        self._staged = {}


@contextlib.contextmanager
def one_commit(directory: str | os.PathLike) -> Iterator[StagedWrite]:
    """The commit of the save into `directory` already in progress here, else a new one, committed on exit.

    Every save into `directory` inside the block (adapter, head, fusion) lands in one commit; if one of them
    fails, nothing is committed.
    """
    key = os.path.realpath(directory)
    commits = _OPEN.get()
    if key in commits:
        stage = commits[key]
        try:
            yield stage
        except BaseException:
            stage.failed = True
            raise
        return
    stage = StagedWrite(directory)
    token = _OPEN.set({**commits, key: stage})
    try:
        with stage:
            yield stage
    finally:
        _OPEN.reset(token)


def atomic_write(target: Path, write: Callable[[str], Any]) -> None:
    """`write(tmp_path)` into a temp file next to `target`, then make it `target` (one commit, or part of the
    open `one_commit` of its directory)."""
    with one_commit(target.parent) as stage:
        stage.write_with(target.name, write)


# -- recovery ------------------------------------------------------------------------------------------
def recover(directory: str | os.PathLike) -> None:
    """Finish a commit a dead process left in `directory` (its journal is there); a no-op otherwise."""
    directory = Path(directory)
    journal = directory / JOURNAL
    if not journal.is_file():
        return
    entries = _read_journal(journal)
    try:
        _roll_forward(directory, entries)
    except OSError as e:
        raise CheckpointError(f"{directory}: a save into it was interrupted after its commit and cannot be finished "
                              f"here ({e}); open it once where the directory is writable") from None


def remove_stale_temps(directory: Path) -> None:
    """Temp files of saves whose process is gone (a crash before the commit): they belong to no save."""
    for entry in os.scandir(directory):
        m = _TEMP.match(entry.name)
        if (m and not _alive(int(m.group(1)))) or (not m and _OLD_TEMP.match(entry.name)):
            Path(entry.path).unlink(missing_ok=True)


def _roll_forward(directory: Path, entries: list) -> None:
    for tmp, final in entries:
        try:
            os.replace(directory / tmp, directory / final)
        except FileNotFoundError:  # moved already, by the interrupted run
            pass
    _fsync_directory(directory)
    (directory / JOURNAL).unlink(missing_ok=True)
    _fsync_directory(directory)


def _read_journal(journal: Path) -> list:
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
        entries = data["files"]
        if not isinstance(entries, list) or not all(
                isinstance(e, list) and len(e) == 2 and _plain_name(e[0]) and _TEMP.match(e[0]) and _plain_name(e[1])
                for e in entries):
            raise ValueError("not a list of [temp file, file] names")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{journal}: not a readable adapterkit commit journal (a list of temp file -> file "
                              "names in this directory); remove it to read the files as they are") from None
    return entries


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # no harmless liveness probe there: a temp file of another process is stale
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


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


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous copy that shares memory with nothing (safetensors refuses shared storage)."""
    return tensor.detach().to("cpu").contiguous().clone()


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    return safetensors_save({k: _plain(v) for k, v in tensors.items()}, metadata=dict(metadata or {}))
