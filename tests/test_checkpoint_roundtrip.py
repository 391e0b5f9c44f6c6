"""Save -> load round trips reproduce outputs exactly (torch.equal) in all three formats, for every method."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertForSequenceClassification, BertModel, RobertaForMaskedLM

import adapterkit
from adapterkit.io import files as io_files

from ckpt_helpers import LORA_FAMILY, METHODS, assert_unchanged, model_with, outputs, randomise, snapshot
from conftest import tiny_model

# task models too: "bert." prefix before the base model; RoBERTa's LM head inverts the NICE adapter
MODELS = {"bert": BertModel, "bert_cls": BertForSequenceClassification, "roberta_mlm": RobertaForMaskedLM}
FORMATS = {
    "adapterkit": list(METHODS),
    "adapterhub": [m for m in METHODS if m != "lora_all"],  # AdapterHub LoRA cannot target "o"
    "peft": LORA_FAMILY,
}
CASES = [(fmt, method) for fmt, methods in FORMATS.items() for method in methods]


def fresh(model_key: str):
    arch = "roberta" if model_key.startswith("roberta") else "bert"
    return adapterkit.init(tiny_model(arch, cls=MODELS[model_key]))


@pytest.mark.parametrize("model_key", sorted(MODELS))
@pytest.mark.parametrize("fmt,method", CASES)
def test_round_trip_is_exact(model_key, fmt, method, batch, tmp_path):
    arch = "roberta" if model_key.startswith("roberta") else "bert"
    model = model_with(arch, method, name="adp", cls=MODELS[model_key])
    expected = outputs(model, batch)
    with adapterkit.AdapterSetup(None):
        assert not torch.equal(outputs(model, batch), expected)  # the adapter matters
    model.save_adapter(tmp_path, "adp", format=fmt)

    other = fresh(model_key)
    name = other.load_adapter(tmp_path, set_active=True)
    assert name == ("adp" if fmt != "peft" else tmp_path.name)
    assert torch.equal(outputs(other, batch), expected)
    if fmt != "peft":  # PEFT has no place for every adapterkit field; the outputs are what must agree
        assert other.adapters_config[name] == model.adapters_config["adp"]
        saved, loaded = model.adapterkit["adp"].state_dict(), other.adapterkit[name].state_dict()
        assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)


@pytest.mark.parametrize("fmt,method", [("adapterhub", "seq_bn_inv"), ("peft", "lora_all"), ("peft", "ia3")])
def test_checkpoint_moves_between_bare_and_task_models(fmt, method, batch, tmp_path):
    """Saved from BertModel, loaded into BertForSequenceClassification (keys gain the "bert." prefix)."""
    model = model_with("bert", method)
    model.save_adapter(tmp_path, "a", format=fmt)
    task = fresh("bert_cls")
    task.load_adapter(tmp_path, load_as="a", set_active=True)
    with torch.no_grad():
        assert torch.equal(task.bert(**batch).last_hidden_state, outputs(model, batch))


def test_our_config_file_records_model_and_format(tmp_path):
    model = model_with("roberta", "lora_all")
    model.save_adapter(tmp_path, "a")
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["format"] == "adapterkit" and data["format_version"] == 1 and data["name"] == "a"
    assert (data["model_type"], data["hidden_size"], data["num_layers"]) == ("roberta", 32, 2)
    assert data["config"] == model.adapters_config["a"].to_dict()
    assert data["adapterkit_version"] == adapterkit.__version__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors", "adapter_config.json"]


def test_load_as_set_active_and_name_conflicts(batch, tmp_path):
    model = model_with("bert", "seq_bn")
    model.save_adapter(tmp_path, "a")
    other = model_with("bert", "lora", name="a", seed=3)
    before = snapshot(other)
    with pytest.raises(adapterkit.AdapterError, match="already exists.*load_as"):
        other.load_adapter(tmp_path)
    assert_unchanged(other, before)
    assert other.load_adapter(tmp_path, load_as="b") == "b"
    assert other.active_adapters == adapterkit.Stack("a")  # not activated without set_active
    other.set_active_adapters("b")
    assert torch.equal(outputs(other, batch), outputs(model, batch))
    assert other.load_adapter(tmp_path, overwrite_ok=True, set_active=True) == "a"
    assert other.adapters_config["a"] == model.adapters_config["a"]
    assert torch.equal(outputs(other, batch), outputs(model, batch))


def test_save_all_adapters_one_folder_each(batch, tmp_path):
    model = model_with("bert", "lora", name="x")
    model.add_adapter("y", config="double_seq_bn")
    randomise(model.adapterkit["y"], 5)
    assert model.save_all_adapters(tmp_path) == ["x", "y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "y"]
    other = fresh("bert")
    for name in ("x", "y"):
        assert other.load_adapter(tmp_path / name) == name
        model.set_active_adapters(name)
        other.set_active_adapters(name)
        assert torch.equal(outputs(other, batch), outputs(model, batch))


def test_merged_adapter_saves_its_own_weights(batch, tmp_path):
    model = model_with("bert", "lora_all")
    expected = outputs(model, batch)
    model.merge_adapter("a")
    model.save_adapter(tmp_path, "a")
    other = fresh("bert")
    other.load_adapter(tmp_path, set_active=True)
    assert torch.equal(outputs(other, batch), expected)


def test_bin_variant_of_adapterhub_format(batch, tmp_path):
    model = model_with("bert", "scaled_par_bn")
    model.save_adapter(tmp_path, "a", format="adapterhub", safetensors=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "pytorch_adapter.bin"]
    other = fresh("bert")
    other.load_adapter(tmp_path, set_active=True)
    assert torch.equal(outputs(other, batch), outputs(model, batch))


@pytest.mark.parametrize("fmt,method,message", [
    ("peft", "seq_bn", "bottleneck adapter; the PEFT format holds LoRA"),
    ("adapterhub", "lora_all", "cannot target the attention output projection"),
    ("zip", "lora", "unknown checkpoint format 'zip'; allowed: adapterkit, adapterhub, peft"),
])
def test_unsavable_combinations_fail_clearly_and_write_nothing(fmt, method, message, tmp_path):
    model = model_with("bert", method)
    with pytest.raises(adapterkit.AdapterError, match=message):
        model.save_adapter(tmp_path / "out", "a", format=fmt)
    assert not (tmp_path / "out").exists()


# -- atomicity -------------------------------------------------------------------------------------------
def _files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub", "peft"])
def test_failed_save_leaves_the_earlier_save_intact(fmt, batch, tmp_path, monkeypatch):
    model = model_with("bert", "lora")
    expected = outputs(model, batch)
    model.save_adapter(tmp_path, "a", format=fmt)
    before = _files(tmp_path)
    randomise(model.adapterkit["a"], seed=9)  # a newer state that must not reach the disk

    real = io_files.StagedWrite.write_bytes
    calls = []

    def crash_after_first_file(self, filename, data):
        calls.append(filename)
        if len(calls) > 1:
            raise OSError("simulated crash while writing")
        return real(self, filename, data)

    monkeypatch.setattr(io_files.StagedWrite, "write_bytes", crash_after_first_file)
    with pytest.raises(OSError, match="simulated crash"):
        model.save_adapter(tmp_path, "a", format=fmt)
    monkeypatch.undo()
    assert len(calls) == 2
    assert _files(tmp_path) == before  # same files, same bytes, no temp files left behind
    other = fresh("bert")
    other.load_adapter(tmp_path, set_active=True)
    assert torch.equal(outputs(other, batch), expected)


def test_crash_between_renames_is_finished_by_the_next_load(batch, tmp_path, monkeypatch):
    """An error between the renames (after the commit point: the journal is in place) leaves new weights next to
    the old config on disk; the next load finishes the commit and reads exactly the new save, not a mix."""
    model = model_with("bert", "lora")
    model.save_adapter(tmp_path, "a")
    randomise(model.adapterkit["a"], seed=9)
    expected = outputs(model, batch)
    real, calls = io_files.os.replace, []

    def replace_once(src, dst):
        calls.append(dst)
        if len(calls) > 2:  # the journal's rename and the weights' rename went through
            raise OSError("simulated crash between renames")
        return real(src, dst)

    monkeypatch.setattr(io_files.os, "replace", replace_once)
    with pytest.raises(OSError):
        model.save_adapter(tmp_path, "a")
    monkeypatch.undo()
    assert (tmp_path / ".adapterkit-commit.json").is_file()
    other = fresh("bert")
    other.load_adapter(tmp_path, set_active=True)
    assert torch.equal(outputs(other, batch), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors", "adapter_config.json"]


def test_added_adapter_follows_the_models_mode(batch, tmp_path):
    """A loaded adapter with dropout runs deterministically in an eval model (new modules start in train mode)."""
    model = model_with("bert", "lora[dropout=0.5]")
    expected = outputs(model, batch)
    model.save_adapter(tmp_path, "a")
    other = fresh("bert")
    other.load_adapter(tmp_path, set_active=True)
    assert not any(m.training for m in other.adapterkit["a"].modules())
    assert torch.equal(outputs(other, batch), expected)
    other.train()
    assert all(m.training for m in other.adapterkit["a"].modules())
