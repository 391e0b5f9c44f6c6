"""Malformed values the fuzzer found (tests/test_hardening_fuzz.py): each is a CheckpointError naming the file, never
a bare TypeError / AttributeError / RuntimeError from inside a format reader (issue 21)."""

from __future__ import annotations

import json

import pytest
import torch

import adapterkit
from adapterkit import CheckpointError

from ckpt_helpers import assert_unchanged, model_with, snapshot
from conftest import tiny_model


def _load_fails(path):
    fresh = adapterkit.init(tiny_model("bert"))
    before = snapshot(fresh)
    with pytest.raises(CheckpointError) as info:
        fresh.load_adapter(path)
    assert str(path) in str(info.value)
    assert_unchanged(fresh, before)


@pytest.mark.parametrize("key,value", [("peft_type", {}), ("auto_mapping", True), ("rank_pattern", True)])
def test_peft_config_values_of_the_wrong_type(tmp_path, key, value):
    model_with("bert", "lora").save_adapter(tmp_path, "a", format="peft")
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    _load_fails(tmp_path)


def test_adapterhub_tensor_of_the_wrong_rank(tmp_path):
    model_with("bert", "lora").save_adapter(tmp_path, "a", format="adapterhub", safetensors=False)
    path = tmp_path / "pytorch_adapter.bin"
    weights = torch.load(path, weights_only=True)
    key = next(k for k in weights if "query" in k and k.endswith("lora_A"))
    torch.save({**weights, key: torch.tensor(1.0)}, path)
    _load_fails(tmp_path)


def test_a_bin_with_its_first_byte_flipped(tmp_path):
    """torch's weights-only unpickler then reads it as a legacy pickle and fails with an IndexError."""
    model_with("bert", "seq_bn").save_adapter(tmp_path, "a", format="adapterhub", safetensors=False)
    path = tmp_path / "pytorch_adapter.bin"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 214
    path.write_bytes(bytes(raw))
    _load_fails(tmp_path)
