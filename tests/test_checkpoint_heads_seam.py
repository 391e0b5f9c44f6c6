"""The seam to `adapterkit.heads.io` (owned by the heads work): what save/load call, and when.

A stand-in module records the calls; the real one replaces it when heads land, with the same contract:
save_head(model, directory, name, format=) -> bool, check_head(model, directory, name, format=) (optional,
before anything changes), load_head(model, directory, name, load_as=, format=).
"""

from __future__ import annotations

import sys
import types

import pytest

from adapterkit import CheckpointError

from ckpt_helpers import assert_unchanged, model_with, snapshot
from conftest import tiny_model

import adapterkit


@pytest.fixture
def heads(monkeypatch):
    calls = []
    module = types.ModuleType("adapterkit.heads.io")
    module.save_head = lambda model, directory, name, format: calls.append(("save", directory, name, format)) or True
    module.check_head = lambda model, directory, name, format: calls.append(("check", directory, name, format))
    module.load_head = lambda model, directory, name, load_as, format: calls.append(
        ("load", directory, name, load_as, format, name in model.adapters_config or load_as in model.adapters_config))
    package = types.ModuleType("adapterkit.heads")
    package.io = module
    monkeypatch.setitem(sys.modules, "adapterkit.heads", package)
    monkeypatch.setitem(sys.modules, "adapterkit.heads.io", module)
    return module, calls


@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub"])
def test_heads_saved_checked_and_loaded_with_their_adapter(heads, fmt, tmp_path):
    _, calls = heads
    model = model_with("bert", "seq_bn", name="task")
    model.save_adapter(tmp_path, "task", format=fmt)
    assert calls == [("save", tmp_path, "task", fmt)]
    other = adapterkit.init(tiny_model("bert"))
    other.load_adapter(tmp_path, load_as="renamed")
    # checked before the adapter exists; loaded after, under the new name
    assert calls[1:] == [("check", tmp_path, "task", fmt), ("load", tmp_path, "task", "renamed", fmt, True)]


def test_with_head_false_and_peft_skip_heads(heads, tmp_path):
    _, calls = heads
    model = model_with("bert", "lora")
    model.save_adapter(tmp_path / "a", "a", with_head=False)
    model.save_adapter(tmp_path / "p", "a", format="peft")
    adapterkit.init(tiny_model("bert")).load_adapter(tmp_path / "a", with_head=False)
    adapterkit.init(tiny_model("bert")).load_adapter(tmp_path / "p")
    assert calls == []


def test_a_bad_head_leaves_the_model_unchanged(heads, tmp_path):
    module, _ = heads
    model_with("bert", "seq_bn").save_adapter(tmp_path, "a")

    def bad_head(model, directory, name, format):
        raise CheckpointError(f"{directory}/head_config.json: missing head weights file")

    module.check_head = bad_head
    model = model_with("bert", "lora", name="existing")
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="missing head weights file"):
        model.load_adapter(tmp_path)
    assert_unchanged(model, before)


def test_without_a_heads_module_heads_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "adapterkit.heads", None)  # import fails as for a missing module
    model = model_with("bert", "seq_bn")
    model.save_adapter(tmp_path, "a")
    assert adapterkit.init(tiny_model("bert")).load_adapter(tmp_path) == "a"
