"""Loading an AdapterFusion meets the adapter loader's standard: a CheckpointError naming the file, the model
unchanged (issue 21, defect 5)."""

from __future__ import annotations

import json

import pytest
import torch

import adapterkit
from adapterkit import AdapterError, CheckpointError, Fuse

from ckpt_helpers import assert_unchanged, snapshot
from test_fusion import fused_model


def _saved(tmp_path, **options):
    model = fused_model()
    model.save_adapter_fusion(tmp_path, "a,b", **options)
    fresh = fused_model()
    fresh.delete_adapter_fusion("a,b")
    return fresh


def _edit(path, fn):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(fn(data)))


def _expect_checkpoint_error(model, path, match=None):
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=match) as info:
        model.load_adapter_fusion(path)
    assert str(path) in str(info.value)
    assert_unchanged(model, before)
    return info.value


def test_garbage_weights(tmp_path):
    fresh = _saved(tmp_path)
    (tmp_path / "adapter_fusion.safetensors").write_bytes(b"\x00garbage" * 10)
    _expect_checkpoint_error(fresh, tmp_path, "safetensors")


@pytest.mark.parametrize("edit", [lambda d: [1], lambda d: {k: v for k, v in d.items() if k != "config"},
                                  lambda d: {**d, "config": [1]}, lambda d: {**d, "adapter_names": 5},
                                  lambda d: {**d, "name": 7}, lambda d: {**d, "adapter_names": ["a", "zz"]}])
def test_bad_configs(tmp_path, edit):
    fresh = _saved(tmp_path)
    _edit(tmp_path / "adapter_fusion_config.json", edit)
    _expect_checkpoint_error(fresh, tmp_path)


def test_non_utf8_config(tmp_path):
    fresh = _saved(tmp_path)
    (tmp_path / "adapter_fusion_config.json").write_bytes(b'{"name": "\xff\xfe"}')
    _expect_checkpoint_error(fresh, tmp_path, "JSON")


def test_another_architecture_is_refused(tmp_path):
    fresh = _saved(tmp_path)
    _edit(tmp_path / "adapter_fusion_config.json", lambda d: {**d, "model_type": "gpt2"})
    _expect_checkpoint_error(fresh, tmp_path, "gpt2")


def test_an_existing_fusion_is_kept_unless_overwrite_ok(tmp_path):
    fresh = _saved(tmp_path)
    fresh.add_adapter_fusion(Fuse("a", "b"))
    before = snapshot(fresh)
    with pytest.raises(AdapterError, match="overwrite_ok"):
        fresh.load_adapter_fusion(tmp_path)
    assert_unchanged(fresh, before)
    assert fresh.load_adapter_fusion(tmp_path, overwrite_ok=True) == "a,b"


def test_a_pickle_is_refused_without_torch_advice(tmp_path):
    fresh = _saved(tmp_path, format="adapterhub", safetensors=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model_adapter_fusion.bin")
    error = _expect_checkpoint_error(fresh, tmp_path, "refused")
    assert "weights_only=False" not in str(error)


def test_wrong_shapes_and_dtypes(tmp_path):
    from safetensors.torch import load_file, save_file
    fresh = _saved(tmp_path)
    path = tmp_path / "adapter_fusion.safetensors"
    weights = load_file(path)
    key = sorted(weights)[0]
    save_file({**weights, key: torch.zeros(3, 3)}, path)
    _expect_checkpoint_error(fresh, tmp_path, "shape")
    save_file({**weights, key: weights[key].to(torch.int64)}, path)
    _expect_checkpoint_error(fresh, tmp_path, "floating")


def test_a_good_fusion_still_loads_exactly(tmp_path):
    model = fused_model()
    model.save_adapter_fusion(tmp_path, "a,b")
    fresh = adapterkit.init(type(model.base_model)(model.config)) if False else fused_model()
    fresh.delete_adapter_fusion("a,b")
    assert fresh.load_adapter_fusion(tmp_path, set_active=True) == "a,b"
    for k, v in model.adapterkit_fusion["a,b"].state_dict().items():
        assert torch.equal(fresh.adapterkit_fusion["a,b"].state_dict()[k], v)
