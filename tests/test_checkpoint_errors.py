"""Bad checkpoints give a CheckpointError naming the file and the problem, and leave the model unchanged."""

from __future__ import annotations

import json
import os
import pickle
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import adapterkit
from adapterkit import CheckpointError
from adapterkit.io.files import sha256

from ckpt_helpers import assert_unchanged, model_with, snapshot

WEIGHTS = {"adapterkit": "adapter.safetensors", "adapterhub": "adapter.safetensors",
           "peft": "adapter_model.safetensors"}


def target(arch="bert", **overrides):
    """A model that already has an (active) adapter, so 'unchanged' covers configs, sites and activation."""
    model = model_with(arch, "seq_bn", name="existing", seed=1, **overrides)
    return model, snapshot(model)


def fails(model, before, path, pattern, **kwargs):
    with pytest.raises(CheckpointError, match=pattern) as info:
        model.load_adapter(path, **kwargs)
    assert_unchanged(model, before)
    return str(info.value)


def saved(tmp_path, fmt="adapterkit", method="lora", arch="bert", **overrides):
    model_with(arch, method, **overrides).save_adapter(tmp_path, "a", format=fmt)
    return tmp_path


def rewrite_weights(path, tensors, fmt):
    """Replace the weights file; for our format also record its hash, so the key/shape checks are reached."""
    save_file(tensors, str(path / WEIGHTS[fmt]))
    if fmt == "adapterkit":
        data = json.loads((path / "adapter_config.json").read_text())
        data["weights"]["sha256"] = sha256((path / WEIGHTS[fmt]).read_bytes())
        (path / "adapter_config.json").write_text(json.dumps(data))


# -- damaged files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub", "peft"])
def test_truncated_weights(fmt, tmp_path):
    path = saved(tmp_path, fmt)
    data = (path / WEIGHTS[fmt]).read_bytes()
    (path / WEIGHTS[fmt]).write_bytes(data[: len(data) // 2])
    model, before = target()
    message = fails(model, before, path, re.escape(str(path / WEIGHTS[fmt])))
    assert ("truncated" in message) or ("SHA-256" in message)


@pytest.mark.parametrize("fmt", ["adapterhub", "peft"])
def test_corrupted_safetensors_header(fmt, tmp_path):
    path = saved(tmp_path, fmt)
    data = bytearray((path / WEIGHTS[fmt]).read_bytes())
    data[8:40] = b"\xff" * 32  # garbage in the JSON header
    (path / WEIGHTS[fmt]).write_bytes(bytes(data))
    model, before = target()
    fails(model, before, path, re.escape(str(path / WEIGHTS[fmt])) + ": not a readable safetensors file .*corrupted")


def test_flipped_bits_in_our_weights_are_caught_by_the_hash(tmp_path):
    path = saved(tmp_path)
    data = bytearray((path / "adapter.safetensors").read_bytes())
    data[-3] ^= 0x40  # a tensor value changes; the file still parses as safetensors
    (path / "adapter.safetensors").write_bytes(bytes(data))
    load_file(str(path / "adapter.safetensors"))  # structurally valid
    model, before = target()
    fails(model, before, path, "adapter.safetensors: its contents do not match the SHA-256 recorded")


@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub", "peft"])
def test_config_that_is_not_json(fmt, tmp_path):
    path = saved(tmp_path, fmt)
    text = (path / "adapter_config.json").read_text()
    (path / "adapter_config.json").write_text(text[: len(text) // 2])
    model, before = target()
    fails(model, before, path, re.escape(str(path / "adapter_config.json")) + ": not valid JSON")


def test_invalid_config_values_name_the_field(tmp_path):
    path = saved(tmp_path)
    data = json.loads((path / "adapter_config.json").read_text())
    data["config"]["r"] = -2
    (path / "adapter_config.json").write_text(json.dumps(data))
    model, before = target()
    fails(model, before, path, r"adapter_config.json: invalid adapter config: LoRAConfig.r=-2 must be an integer >= 1")


def test_unrecognised_config_and_too_new_format(tmp_path):
    path = saved(tmp_path)
    model, before = target()
    data = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({"hello": 1}))
    fails(model, before, path, "not a recognised adapter config")
    (path / "adapter_config.json").write_text(json.dumps({**data, "format_version": 99}))
    fails(model, before, path, "format_version 99 is not supported")
    (path / "adapter_config.json").write_text(json.dumps(data))
    fails(model, before, path, "is in adapterkit format, not peft", format="peft")


# -- pickles that would run code -------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("style", ["torch.save", "raw pickle"])
@pytest.mark.parametrize("fmt", ["adapterhub", "peft"])
def test_pickle_that_would_run_code_is_refused(fmt, style, tmp_path):
    path = saved(tmp_path / "ckpt", fmt)
    marker = tmp_path / "code-ran"
    weights = {k: v for k, v in load_file(str(path / WEIGHTS[fmt])).items()}
    payload = {"evil": _RunsCode(marker), **weights}  # first, so the unpickler meets it before any tensor
    (path / WEIGHTS[fmt]).unlink()
    bin_file = path / ("pytorch_adapter.bin" if fmt == "adapterhub" else "adapter_model.bin")
    if style == "torch.save":
        torch.save(payload, bin_file)
    else:
        bin_file.write_bytes(pickle.dumps(payload, protocol=2))  # the legacy (non-zip) torch format
    model, before = target()
    message = fails(model, before, path, re.escape(str(bin_file)) + ": refused to load: the pickle .* would run code")
    assert "GLOBAL posix.system" in message or "GLOBAL os.system" in message
    assert "weights_only` set to `False`" not in message  # no advice to switch the protection off
    assert not marker.exists()
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # the payload is real: a plain unpickler runs it
    assert marker.exists()


def test_bin_that_is_not_a_state_dict(tmp_path):
    path = saved(tmp_path, "adapterhub", method="seq_bn")
    (path / "adapter.safetensors").unlink()
    torch.save([torch.zeros(2)], path / "pytorch_adapter.bin")
    model, before = target()
    fails(model, before, path, "pytorch_adapter.bin: expected a state dict")


# -- checkpoints for another model -----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub"])
def test_other_hidden_size(fmt, tmp_path):
    path = saved(tmp_path, fmt, method="seq_bn")
    model, before = target(hidden_size=48)
    fails(model, before, path, r"adapter_config.json: the adapter was made for a model with hidden_size=32, "
                               r"but this model has hidden_size=48")


def test_other_hidden_size_peft_is_caught_by_shapes(tmp_path):
    path = saved(tmp_path, "peft")
    model, before = target(hidden_size=48)
    fails(model, before, path, r"adapter_model.safetensors: does not match .*wrong shapes: layers.0.attn_q.lora_A "
                               r"has shape \(8, 32\), expected \(8, 48\)")


@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub", "peft"])
def test_other_architecture(fmt, tmp_path):
    path = saved(tmp_path, fmt, arch="roberta")
    model, before = target("bert")
    fails(model, before, path, r"adapter_config.json: the adapter was made for model_type 'roberta' "
                               r"\(another architecture.*this model is 'bert'")


def test_other_number_of_layers(tmp_path):
    path = saved(tmp_path, method="seq_bn")
    model, before = target(num_hidden_layers=3)
    fails(model, before, path, "num_layers=2, but this model has num_layers=3")


# -- missing files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["adapterkit", "adapterhub", "peft"])
def test_missing_weights_file(fmt, tmp_path):
    path = saved(tmp_path, fmt)
    (path / WEIGHTS[fmt]).unlink()
    model, before = target()
    fails(model, before, path, "missing (weights file|weights: neither)")


def test_missing_config_and_missing_directory(tmp_path):
    path = saved(tmp_path)
    model, before = target()
    (path / "adapter_config.json").unlink()
    fails(model, before, path, r"adapter_config.json: missing adapter config \(the directory holds: "
                               r"adapter.safetensors\)")
    fails(model, before, tmp_path / "nowhere", "nowhere: no such adapter directory")


# -- weights that do not fit the config ------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["adapterkit", "peft"])
def test_missing_unexpected_and_misshapen_weights(fmt, tmp_path):
    path = saved(tmp_path, fmt)
    weights = load_file(str(path / WEIGHTS[fmt]))
    keys = sorted(weights)
    model, before = target()

    dropped = {k: v for k, v in weights.items() if k != keys[0]}
    rewrite_weights(path, dropped, fmt)
    fails(model, before, path, "does not match the adapter its config describes.*missing weights: layers.0.attn_q")

    bad_shape = dict(weights)
    bad_shape[keys[0]] = torch.zeros(3, 3)
    rewrite_weights(path, bad_shape, fmt)
    fails(model, before, path, r"wrong shapes: layers.0.attn_q.lora_A has shape \(3, 3\)")

    if fmt == "adapterkit":
        rewrite_weights(path, {**weights, "layers.0.attn_q.extra": torch.zeros(1)}, fmt)
        fails(model, before, path, "unexpected weights: layers.0.attn_q.extra")
    else:
        rewrite_weights(path, {**weights, "base_model.model.classifier.weight": torch.zeros(2, 32)}, fmt)
        fails(model, before, path, "holds weights adapterkit cannot place: base_model.model.classifier.weight")


def test_adapterhub_weights_of_an_unknown_module(tmp_path):
    path = saved(tmp_path, "adapterhub", method="seq_bn")
    weights = load_file(str(path / "adapter.safetensors"))
    weights["encoder.layer.0.crossattention.adapters.a.adapter_up.weight"] = torch.zeros(32, 2)
    save_file(weights, str(path / "adapter.safetensors"))
    model, before = target()
    fails(model, before, path, "adapter.safetensors: AdapterHub weight 'encoder.layer.0.crossattention.adapters.a."
                               "adapter_up.weight' of adapter 'a' has no adapterkit counterpart")


def test_bad_format_argument(tmp_path):
    model, before = target()
    with pytest.raises(adapterkit.AdapterError, match="unknown checkpoint format 'safetensors'"):
        model.load_adapter(saved(tmp_path), format="safetensors")
    assert_unchanged(model, before)
