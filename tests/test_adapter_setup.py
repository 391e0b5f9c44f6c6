"""save_adapter_setup / load_adapter_setup: a whole composition (adapters, fusions, heads, the active setup) in the
`adapters` package's layout. Setups the package saved (tests/fixtures/adapters_setup, tools/make_setup_fixtures.py)
load here with its outputs; ours load back here, and (AdapterHub format) in the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adapterkit
from adapterkit import AdapterError, Average, BatchSplit, CheckpointError, Fuse, Split, Stack
from adapterkit.setup_io import block_from_dict, block_to_dict

from test_head_checkpoints import fixture_model

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "adapters_setup"
BASE = Path(__file__).parent / "fixtures" / "adapters_heads" / "bert" / "base"
INPUTS = load_file(FIXTURES / "inputs.safetensors")
REF_PYTHON = next((p for p in [os.environ.get("ADAPTERKIT_REF_PYTHON"), ROOT / ".venv-ref/bin/python",
                               Path("/work/main/.venv-ref/bin/python")] if p and Path(p).is_file()), None)


def hidden(model):
    with torch.no_grad():
        return model.base_model(**INPUTS).last_hidden_state


def composed(seed=0):
    """Our AdapterModel with adapters a, b (bottleneck), c (LoRA), a fusion of a and b and heads c and d."""
    model = fixture_model("bert")
    model.add_adapter("a", config="seq_bn[reduction_factor=4]")
    model.add_adapter("b", config="seq_bn[reduction_factor=8]")
    model.add_adapter("c", config="lora[r=4,alpha=8]")
    model.add_adapter_fusion(Fuse("a", "b"))
    model.add_adapter_fusion(Fuse("a", "b", name="ab2"))
    model.add_classification_head("c", num_labels=3)
    model.add_classification_head("d", num_labels=2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("adapterkit", "heads.")) or "fusion" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


# -- the package's saves load here -----------------------------------------------------------------------------
@pytest.mark.parametrize("case, setup, head_setup", [
    ("stack_fuse", Stack(Fuse("a", "b"), "c"), "c"),
    ("batch_split_bin", BatchSplit("a", "b", batch_sizes=[1, 2]), None),
])
def test_setup_saved_by_the_adapters_package_loads(case, setup, head_setup):
    expected = load_file(FIXTURES / case / "expected.safetensors")
    model = fixture_model("bert")
    plain = hidden(model)
    loaded, heads = model.load_adapter_setup(FIXTURES / case / "setup", set_active=True)
    assert loaded == setup and heads == head_setup
    assert model.active_adapters == setup
    out = hidden(model)
    assert (out - plain).abs().max() > 1e-3
    torch.testing.assert_close(out, expected["last_hidden_state"], atol=1e-5, rtol=0)
    if head_setup:
        assert model.active_head == head_setup
        with torch.no_grad():
            torch.testing.assert_close(model(**INPUTS).logits, expected["logits"], atol=1e-5, rtol=0)


def test_block_json_is_the_packages():
    saved = json.loads((FIXTURES / "stack_fuse" / "setup" / "adapter_setup.json").read_text())
    assert block_to_dict(Stack(Fuse("a", "b"), "c")) == saved["adapter_setup"]
    for block in [Stack(Fuse("a", "b", name="ab"), "c"), Split("a", "b", splits=[3, 4]),
                  BatchSplit("a", Stack("b", "c"), batch_sizes=[1, 2]), Average("a", "b", weights=[0.2, 0.8])]:
        assert block_from_dict(json.loads(json.dumps(block_to_dict(block))), "x") == block


# -- ours round-trip --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("format", ["adapterkit", "adapterhub"])
def test_round_trip_with_fusion_heads_and_active_setup(tmp_path, format):
    model = composed()
    setup = Stack(Fuse("a", "b", name="ab2"), "c")
    model.set_active_adapters(setup)
    expected_hidden = hidden(model)
    with torch.no_grad():
        expected_c, expected_d = model(**INPUTS, head="c").logits, model(**INPUTS, head="d").logits
    model.save_adapter_setup(tmp_path / "s", setup, head_setup=["c", "d"], format=format)
    assert {p.name for p in (tmp_path / "s").iterdir()} == {"adapter_setup.json", "a", "b", "c", "ab2", "d"}
    other = fixture_model("bert")
    loaded, heads = other.load_adapter_setup(tmp_path / "s", set_active=True)
    assert loaded == setup and heads == ["c", "d"]
    assert set(other.adapter_fusions) == {"ab2"} and set(other.heads) == {"c", "d"}
    torch.testing.assert_close(hidden(other), expected_hidden, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(other(**INPUTS, head="c").logits, expected_c, atol=1e-6, rtol=0)
        torch.testing.assert_close(other(**INPUTS, head="d").logits, expected_d, atol=1e-6, rtol=0)


def test_layout_matches_the_packages(tmp_path):
    model = composed()
    model.save_adapter_setup(tmp_path / "s", Stack(Fuse("a", "b"), "c"), head_setup="c", format="adapterhub")
    ref = FIXTURES / "stack_fuse" / "setup"
    ours = tmp_path / "s"
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in ref.iterdir())
    for folder in ("a", "b", "a,b"):
        assert {p.name for p in (ours / folder).iterdir()} == {p.name for p in (ref / folder).iterdir()}, folder
    adapter_files = {p.name for p in (ours / "c").iterdir() if not p.name.startswith("head")}
    assert adapter_files <= {p.name for p in (ref / "c").iterdir()}
    saved = json.loads((ours / "adapter_setup.json").read_text())
    assert saved["adapter_setup"] == json.loads((ref / "adapter_setup.json").read_text())["adapter_setup"]
    assert saved["head_setup"] == "c" and saved["version"].startswith("adapterkit.")


def test_head_setup_true_saves_the_active_head_at_the_root(tmp_path):
    model = composed()
    model.set_active_adapters("a")
    model.active_head = "d"
    model.save_adapter_setup(tmp_path / "s", "a", head_setup=True)
    assert (tmp_path / "s" / "head_config.json").is_file()
    other = fixture_model("bert")
    other.load_adapter_setup(tmp_path / "s", set_active=True)
    assert set(other.heads) == {"d"} and other.active_head == "d"
    with torch.no_grad():
        torch.testing.assert_close(other(**INPUTS).logits, model(**INPUTS).logits, atol=1e-6, rtol=0)


def test_plain_model_round_trip_and_no_heads(tmp_path):
    from test_reference_adapters import load_base
    model = adapterkit.init(load_base("bert"))
    model.add_adapter("x", config="lora[r=4]")
    model.add_adapter("y", config="pfeiffer")
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(0.1)
    setup = BatchSplit("x", "y", batch_sizes=[1, 2])
    model.set_active_adapters(setup)
    with torch.no_grad():
        expected = model(**INPUTS).last_hidden_state
    with pytest.raises(AdapterError, match="has no prediction heads"):
        model.save_adapter_setup(tmp_path / "s", setup, head_setup="x")
    model.save_adapter_setup(tmp_path / "s", setup)
    other = adapterkit.init(load_base("bert"))
    other.load_adapter_setup(tmp_path / "s", set_active=True)
    with torch.no_grad():
        torch.testing.assert_close(other(**INPUTS).last_hidden_state, expected, atol=1e-6, rtol=0)


@pytest.mark.skipif(REF_PYTHON is None, reason="reference venv with the `adapters` package not found")
@pytest.mark.parametrize("safetensors", [True, False])
def test_the_adapters_package_loads_our_setup(tmp_path, safetensors):
    model = composed()
    setup = Stack(Fuse("a", "b", name="ab2"), "c")
    model.set_active_adapters(setup)
    expected = hidden(model)
    model.save_adapter_setup(tmp_path / "s", setup, format="adapterhub", safetensors=safetensors)
    (tmp_path / "request.json").write_text(json.dumps({
        "base": str(BASE), "inputs": str(FIXTURES / "inputs.safetensors"), "setup": str(tmp_path / "s"),
        "safetensors": safetensors}))
    done = subprocess.run([str(REF_PYTHON), str(ROOT / "tools" / "load_setup_with_adapters.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ab2" in (tmp_path / "setup.txt").read_text() or "Fuse" in (tmp_path / "setup.txt").read_text()
    theirs = load_file(tmp_path / "outputs.safetensors")["last_hidden_state"]
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=0)


# -- errors: clear, and the model unchanged -------------------------------------------------------------------
def _copy(tmp_path, case="stack_fuse"):
    shutil.copytree(FIXTURES / case / "setup", tmp_path / "s")
    return tmp_path / "s"


def _edit(path, change):
    data = json.loads((path / "adapter_setup.json").read_text())
    change(data)
    (path / "adapter_setup.json").write_text(json.dumps(data))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["adapter_setup"].update(type="MultiTask"), "unknown block type 'MultiTask'"),
    (lambda d: d["adapter_setup"].update(kwargs={"splits": 3}), "Stack takes kwargs"),
    (lambda d: d["adapter_setup"]["children"][1].update(children=["../../etc"]), "invalid adapter name"),
    (lambda d: d["adapter_setup"]["children"][1].update(children=[]), "a single adapter is"),
    (lambda d: d.update(head_setup=3), "head_setup must be"),
    (lambda d: d.pop("adapter_setup"), "no 'adapter_setup' key"),
])
def test_bad_setup_file_is_a_clear_error_and_changes_nothing(tmp_path, change, message):
    path = _copy(tmp_path)
    _edit(path, change)
    model = fixture_model("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=message) as err:
        model.load_adapter_setup(path)
    assert "adapter_setup.json" in str(err.value)
    assert not model.adapter_state.configs and not model.heads
    assert model.state_dict().keys() == before.keys()


def test_failure_half_way_takes_everything_out_again(tmp_path):
    path = _copy(tmp_path)
    (path / "a,b" / "model_adapter_fusion.safetensors").write_bytes(b"not safetensors")
    model = fixture_model("bert")
    keys = set(model.state_dict())
    with pytest.raises(CheckpointError, match="model_adapter_fusion.safetensors"):
        model.load_adapter_setup(path, set_active=True)
    assert not model.adapter_state.configs and not model.adapter_fusions and not model.heads
    assert set(model.state_dict()) == keys and model.active_adapters is None and model.active_head is None


def test_names_already_on_the_model_are_refused_first(tmp_path):
    model = fixture_model("bert")
    model.add_adapter("c", config="lora")
    with pytest.raises(AdapterError, match="already has 'c'"):
        model.load_adapter_setup(FIXTURES / "stack_fuse" / "setup")
    assert set(model.adapter_state.configs) == {"c"}


def test_save_checks_everything_before_writing(tmp_path):
    model = composed()
    with pytest.raises(AdapterError, match="no AdapterFusion named 'b,a'"):
        model.save_adapter_setup(tmp_path / "s", Fuse("b", "a"))
    with pytest.raises(AdapterError, match="head 'nope'"):
        model.save_adapter_setup(tmp_path / "s", "a", head_setup=["c", "nope"])
    with pytest.raises(AdapterError, match="no PEFT form"):
        model.save_adapter_setup(tmp_path / "s", Stack(Fuse("a", "b"), "c"), format="peft")
    with pytest.raises(AdapterError, match="do not exist"):
        model.save_adapter_setup(tmp_path / "s", Stack("a", "zz"))
    assert not (tmp_path / "s").exists()


def test_a_failed_save_keeps_the_previous_setup_file(tmp_path, monkeypatch):
    model = composed()
    model.save_adapter_setup(tmp_path / "s", "a")
    before = (tmp_path / "s" / "adapter_setup.json").read_bytes()
    monkeypatch.setattr(type(model), "save_adapter_fusion", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError, match="disk"):
        model.save_adapter_setup(tmp_path / "s", Stack(Fuse("a", "b"), "c"))
    assert (tmp_path / "s" / "adapter_setup.json").read_bytes() == before
    other = fixture_model("bert")
    assert other.load_adapter_setup(tmp_path / "s")[0] == Stack("a")


def test_setup_from_a_hub_repo_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from hub_cache import cache_repo
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    source = FIXTURES / "stack_fuse" / "setup"
    cache_repo(tmp_path, "org/setup", source, listed_only={"big.bin": b"0" * 1000})
    model = fixture_model("bert")
    model.load_adapter_setup("org/setup", set_active=True, cache_dir=tmp_path)
    expected = load_file(FIXTURES / "stack_fuse" / "expected.safetensors")
    torch.testing.assert_close(hidden(model), expected["last_hidden_state"], atol=1e-5, rtol=0)
    with pytest.raises(AdapterError, match="not in the Hugging Face cache"):
        fixture_model("bert").load_adapter_setup("org/other", cache_dir=tmp_path)
