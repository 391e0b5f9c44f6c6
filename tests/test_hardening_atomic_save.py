"""A save is one commit: a process that dies after any file operation of a save leaves a directory that loads as
exactly the previous save or exactly the new one, and the next save leaves no temp files behind.

The save runs in a forked child (cheap: torch is already imported) whose file operations (os.open for writing,
open() for writing, fsync, replace, rename, unlink, mkdir, ...) are counted; after the k-th one the child calls
`os._exit`. k runs over every operation until a save completes without reaching the crash point.
"""

from __future__ import annotations

import builtins
import io
import os
import traceback

import pytest
import torch

from adapterkit import AutoAdapterModel, Fuse
from conftest import tiny_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the crash points run in forked children")

CRASHED = 17
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def build(version: int):
    """adapter "a" + head "a" + fusion "a,b"; the saved parts' weights depend on `version` only."""
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config("bert")).eval()
    model.add_adapter("a", config="seq_bn")
    model.add_adapter("b", config="seq_bn")
    model.add_classification_head("a", num_labels=3)
    model.add_adapter_fusion(Fuse("a", "b"))
    g = torch.Generator().manual_seed(version)
    with torch.no_grad():
        for part in _parts(model, fusion=True).values():
            for p in part.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def _parts(model, fusion: bool) -> dict:
    parts = {"adapter": model.adapterkit["a"], "head": model.heads["a"]}
    if fusion:
        parts["fusion"] = model.adapterkit_fusion["a,b"]
    return parts


def state(model, fusion: bool) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v.detach().clone() for part, module in _parts(model, fusion).items()
            for k, v in module.state_dict().items()}


def save(model, directory, fusion: bool) -> None:
    if not fusion:  # adapter + head: save_adapter alone must be one commit
        model.save_adapter(directory, "a")
        return
    from adapterkit.io import one_commit
    with one_commit(directory):
        model.save_adapter(directory, "a")
        model.save_adapter_fusion(directory, "a,b")


def load(directory, fusion: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config("bert")).eval()
    model.add_adapter("b", config="seq_bn")  # fused with "a"; not part of the save
    model.load_adapter(directory)
    if fusion:
        model.load_adapter_fusion(directory)
    return state(model, fusion)


def _count_after(k: int, ops: list[str]):
    """Patch the file operations of this (child) process: after the k-th one, os._exit."""
    def counted(name, fn, writes=lambda *a, **kw: True):
        def wrapper(*args, **kwargs):
            result = fn(*args, **kwargs)
            if writes(*args, **kwargs):
                ops.append(name)
                if len(ops) > k:
                    os._exit(CRASHED)
            return result
        return wrapper

    for name in ("replace", "rename", "unlink", "remove", "rmdir", "mkdir", "fsync", "truncate", "ftruncate"):
        setattr(os, name, counted(name, getattr(os, name)))
    os.open = counted("open", os.open, lambda path, flags, *a, **kw: bool(flags & _WRITE_FLAGS))
    opener = counted("open()", builtins.open,
                     lambda file, mode="r", *a, **kw: any(c in mode for c in "wax+"))
    builtins.open = io.open = opener


def _save_crashing_after(k: int, model, directory, fusion: bool) -> tuple[int, int]:
    """(exit code, operations counted) of a forked child that saves `model` and dies after operation k."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            ops: list[str] = []
            _count_after(k, ops)
            save(model, directory, fusion)
            os.write(write, f"{len(ops)} {' '.join(ops)}".encode())
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code, int(report.split()[0]) if report else k + 1


@pytest.mark.parametrize("fusion", [False, True], ids=["adapter+head", "adapter+head+fusion"])
def test_a_crash_after_any_file_operation_leaves_the_old_or_the_new_save(fusion, tmp_path):
    old, new, next_ = build(1), build(2), build(3)
    expected = {"old": state(old, fusion), "new": state(new, fusion)}
    assert not all(torch.equal(expected["old"][k], expected["new"][k]) for k in expected["old"])
    outcomes = []
    for k in range(200):
        directory = tmp_path / f"k{k}"
        save(old, directory, fusion)
        code, count = _save_crashing_after(k, new, directory, fusion)
        if code == 0:  # the save finished before operation k: every crash point was tried
            assert count == k, "the child's file operations changed between runs"
            break
        assert code == CRASHED, f"the save crashed on its own (exit code {code}) at operation {k}"
        try:
            loaded = load(directory, fusion)
        except Exception as e:  # noqa: BLE001 - reported as the failure
            pytest.fail(f"crash after file operation {k}: the directory does not load: {e}")
        versions = [v for v, tensors in expected.items() if loaded.keys() == tensors.keys()
                    and all(torch.equal(loaded[key], tensors[key]) for key in tensors)]
        assert versions, f"crash after file operation {k}: the directory loads as a mix of the old and new save"
        outcomes.append(versions[0])
        save(next_, directory, fusion)  # the next save cleans up what the crashed one left
        leftovers = sorted(p.name for p in directory.iterdir() if p.name.startswith("."))
        assert not leftovers, f"crash after file operation {k}: the next save left {leftovers}"
        assert all(torch.equal(a, b) for a, b in zip(load(directory, fusion).values(),
                                                      state(next_, fusion).values()))
    else:
        pytest.fail("the save never completed")
    assert "old" in outcomes and "new" in outcomes, outcomes  # crash points before and after the commit


def test_a_failed_part_of_one_commit_commits_nothing(tmp_path, monkeypatch):
    """A save inside `one_commit` that fails (even if the caller goes on) leaves the previous files, no temps."""
    from adapterkit import AdapterError
    from adapterkit.io import one_commit
    old, new = build(1), build(2)
    save(old, tmp_path, fusion=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(AdapterError, match="part of this commit failed"):
        with one_commit(tmp_path):
            new.save_adapter(tmp_path, "a")
            monkeypatch.setattr("adapterkit.io.fusion.save_file", _disk_full)
            with pytest.raises(OSError, match="disk full"):
                new.save_adapter_fusion(tmp_path, "a,b")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _disk_full(*args, **kwargs):
    raise OSError("disk full")


@pytest.mark.parametrize("format", ["adapterkit", "adapterhub", "peft"])
def test_a_committed_save_holds_only_the_formats_files(format, tmp_path):
    """No journal or manifest stays behind: AdapterHub and PEFT read the directory as before."""
    model = build(1)
    if format == "peft":
        model.add_adapter("l", config="lora")
        model.save_adapter(tmp_path, "l", format=format)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        return
    model.save_adapter(tmp_path, "a", format=format)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter.safetensors", "adapter_config.json", "head.safetensors", "head_config.json"]


def test_the_next_save_removes_stale_temp_files_only(tmp_path):
    model = build(1)
    model.save_adapter(tmp_path, "a")
    stale = [".adapter.safetensors.abc123_x.tmp",  # an earlier adapterkit's temp file (no pid)
             f".head.safetensors.{2**22 + 12345}-abcdefgh.tmp"]  # of a process that is gone
    live = f".adapter_config.json.{os.getpid()}-abcdefgh.tmp"  # of a running process: a save in progress
    for name in [*stale, live, "notes.tmp"]:
        (tmp_path / name).write_bytes(b"x")
    model.save_adapter(tmp_path, "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live, "notes.tmp", "adapter.safetensors", "adapter_config.json", "head.safetensors", "head_config.json"])


def test_a_journal_naming_other_places_is_refused(tmp_path):
    """A crafted journal cannot make a load move files outside the directory."""
    from adapterkit import CheckpointError
    model = build(1)
    model.save_adapter(tmp_path / "d", "a")
    (tmp_path / "d" / ".adapterkit-commit.json").write_text(
        '{"files": [[".x.1-abcdefgh.tmp", "../outside"]]}')
    with pytest.raises(CheckpointError, match="not a readable adapterkit commit journal"):
        build(1).load_adapter(tmp_path / "d", overwrite_ok=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
