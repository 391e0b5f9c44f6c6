"""Adapter, fusion and head names are single path components safe on every OS, and no nn.ModuleDict attribute.

Every entry point that takes a name (from the caller or from a checkpoint file) refuses a bad one with an
AdapterError naming it, and whatever it accepted, `save_all_*` writes nothing outside the target directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import adapterkit.model
from adapterkit import AdapterError, AutoAdapterModel, Fuse
from adapterkit.naming import check_adapter_name

from conftest import tiny_config, tiny_model

MAX_NAME_BYTES = 200  # the documented limit (UTF-8 bytes)
ALLOWED = "use a non-empty string"  # how every refusal starts to say what is allowed
# "{tmp}" stands for the test's tmp_path: an absolute name pointing outside the target, but never outside the test
BAD_NAMES = [
    "{tmp}/outside", "a/b", "a\\b", "..", ".", "a:b", "C:", "a*b", "a?b", 'a"b', "a<b", "a>b", "a|b",
    "a\x00b", "a\x1fb", "a\x7fb", "a\u202eb", "CON", "nul", "Com1", "LPT9", "aux", "COM\u00b9", "a ", " a",
    "a.", "x" * (MAX_NAME_BYTES + 1), "\u00fc" * (MAX_NAME_BYTES // 2 + 1),
    "keys", "forward", "to", "training", "_modules", "add_module", "__class__",
]
GOOD_NAMES = ["z", "my-adapter_1", "c,d", "\u00e4nder", "COM10", "console", "x" * MAX_NAME_BYTES, "Keys"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Checkpoints to load from: an adapter (with its head), a fusion, a head; adapters "a" and "b"."""
    root = tmp_path_factory.mktemp("sources")
    model = _model()
    model.save_adapter(root / "adapter", "a")
    model.save_adapter_fusion(root / "fusion", ["a", "b"])
    model.save_head(root / "head", "a")
    return root


def _model():
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config("bert")).eval()
    model.add_adapter("a", "seq_bn")
    model.add_adapter("b", "seq_bn")
    model.add_adapter_fusion(["a", "b"])
    model.add_classification_head("a")
    return model


def _with_saved_name(src: Path, dst: Path, config_file: str, name: str) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / config_file).read_text())
    data["name"] = name
    (dst / config_file).write_text(json.dumps(data))
    return dst


ENTRY_POINTS = {
    "add_adapter": lambda m, n, s, t: m.add_adapter(n, "seq_bn"),
    "add_adapter_lora": lambda m, n, s, t: m.add_adapter(n, "lora"),
    "average_adapter": lambda m, n, s, t: m.average_adapter(n, ["a", "b"]),
    "load_adapter(load_as)": lambda m, n, s, t: m.load_adapter(s / "adapter", load_as=n),
    "load_adapter(name in file)": lambda m, n, s, t: m.load_adapter(
        _with_saved_name(s / "adapter", t / "src", "adapter_config.json", n)),
    "add_adapter_fusion(name)": lambda m, n, s, t: m.add_adapter_fusion(["a", "b"], name=n),
    "add_adapter_fusion(Fuse(name))": lambda m, n, s, t: m.add_adapter_fusion(Fuse("a", "b", name=n)),
    "load_adapter_fusion(load_as)": lambda m, n, s, t: m.load_adapter_fusion(s / "fusion", load_as=n),
    "load_adapter_fusion(name in file)": lambda m, n, s, t: m.load_adapter_fusion(
        _with_saved_name(s / "fusion", t / "src", "adapter_fusion_config.json", n)),
    "add_classification_head": lambda m, n, s, t: m.add_classification_head(n),
    "load_head(load_as)": lambda m, n, s, t: m.load_head(s / "head", load_as=n),
    "load_head(name in file)": lambda m, n, s, t: m.load_head(
        _with_saved_name(s / "head", t / "src", "head_config.json", n)),
}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("bad", BAD_NAMES, ids=[repr(n)[:24] for n in BAD_NAMES])
def test_bad_names_are_refused_and_nothing_is_written_outside(tmp_path, sources, entry, bad):
    name = bad.replace("{tmp}", str(tmp_path))
    model = _model()
    target = tmp_path / "out"
    before = _files(tmp_path)
    with pytest.raises(AdapterError) as refused:
        ENTRY_POINTS[entry](model, name, sources, tmp_path)
    assert repr(name) in str(refused.value) and ALLOWED in str(refused.value), str(refused.value)
    # whatever got in, saving everything stays inside `target`
    try:
        model.save_all_adapters(target)
        model.save_all_adapter_fusions(target)
    except AdapterError:
        pass
    written = {p for p in _files(tmp_path) - before if not p.is_relative_to(tmp_path / "src")}
    assert all(p.is_relative_to(target) for p in written), sorted(written)
    assert {p.name for p in target.iterdir()} <= {"a", "b", "a,b"} if target.exists() else True


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_work_everywhere(tmp_path, name):
    check_adapter_name(name)
    check_adapter_name(name, "fusion")
    model = _model()
    model.add_adapter(name, "seq_bn")
    model.add_adapter_fusion(["a", name], name=name)
    model.add_classification_head(name)
    assert model.save_all_adapters(tmp_path / "out") == ["a", "b", name]
    assert sorted(model.save_all_adapter_fusions(tmp_path / "fusions")) == sorted(["a,b", name])
    assert (tmp_path / "out" / name / "head_config.json").is_file()
    again = _model()
    assert again.load_adapter(tmp_path / "out" / name) == name and name in again.heads
    assert again.load_adapter_fusion(tmp_path / "fusions" / name) == name


@pytest.mark.parametrize("bad", [5, None, b"a", ""])
def test_non_string_or_empty_names(bad):
    with pytest.raises(AdapterError, match="invalid adapter name"):
        check_adapter_name(bad)
    with pytest.raises(AdapterError, match="invalid adapter name"):
        adapterkit.init(tiny_model()).add_adapter(bad)


@pytest.mark.parametrize("save_all", ["save_all_adapters", "save_all_adapter_fusions"])
def test_save_all_refuses_a_bad_name_that_got_in_around_the_checks(tmp_path, monkeypatch, save_all):
    """save_all_* check every name before writing anything, even one added around the API's checks."""
    monkeypatch.setattr(adapterkit.model, "check_adapter_name", lambda *a, **k: None)
    monkeypatch.setattr("adapterkit.fusion_api.check_adapter_name", lambda *a, **k: None, raising=False)
    model = _model()
    outside = tmp_path / "outside"
    model.add_adapter(str(outside), "seq_bn")
    model.adapterkit_fusion[str(outside)] = model.adapterkit_fusion["a,b"]
    monkeypatch.undo()
    with pytest.raises(AdapterError, match="invalid (adapter|fusion) name"):
        getattr(model, save_all)(tmp_path / "out")
    assert not outside.exists() and not (tmp_path / "out").exists()


def test_peft_directory_names_that_are_not_valid_load_as_default(tmp_path):
    """A PEFT checkpoint has no name field: its directory's name is used only if it is a valid name."""
    model = adapterkit.init(tiny_model())
    model.add_adapter("x", "lora")
    model.save_adapter(tmp_path / "keys", "x", format="peft")
    again = adapterkit.init(tiny_model())
    assert again.load_adapter(tmp_path / "keys") == "default"
