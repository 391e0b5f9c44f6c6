"""Weights files whose tensors are not floating point (int32, bool) are refused for adapters, heads and fusions
alike (one check, io/validate.py), naming the file and the tensors; the model is unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapterkit import AdapterError, AutoAdapterModel

from conftest import tiny_config

# what is saved: its directory, the weights file in it, how to load it
KINDS = {
    "adapter": ("adapter.safetensors", lambda m, d: m.load_adapter(d, load_as="c", with_head=False)),
    "head": ("head.safetensors", lambda m, d: m.load_head(d, load_as="c")),
    "fusion": ("adapter_fusion.safetensors", lambda m, d: m.load_adapter_fusion(d, load_as="c")),
}


def _model():
    torch.manual_seed(0)
    model = AutoAdapterModel.from_config(tiny_config("bert")).eval()
    model.add_adapter("a", "seq_bn")
    model.add_adapter("b", "seq_bn")
    model.add_adapter_fusion(["a", "b"])
    model.add_classification_head("a")
    return model


def _save(model, kind, directory):
    if kind == "adapter":
        model.save_adapter(directory, "a", with_head=False)
    elif kind == "head":
        model.save_head(directory, "a")
    else:
        model.save_adapter_fusion(directory, ["a", "b"])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
@pytest.mark.parametrize("kind", list(KINDS))
def test_non_floating_point_weights_are_refused(tmp_path, kind, dtype):
    model = _model()
    _save(model, kind, tmp_path)
    file, load = KINDS[kind]
    weights = load_file(tmp_path / file)
    key = sorted(weights)[0]
    weights[key] = weights[key].to(dtype)
    save_file(weights, tmp_path / file)
    if kind == "adapter":  # the native format records the weights' SHA-256: drop it, the dtype is what is tested
        import json
        config = json.loads((tmp_path / "adapter_config.json").read_text())
        config.pop("weights")
        (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterError, match="non-floating-point") as refused:
        load(model, tmp_path)
    assert key in str(refused.value) and str(tmp_path) in str(refused.value)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert "c" not in model.heads and "c" not in model.adapter_fusions and "c" not in model.adapters_config


@pytest.mark.parametrize("kind", list(KINDS))
def test_half_precision_weights_still_load(tmp_path, kind):
    model = _model()
    _save(model, kind, tmp_path)
    file, load = KINDS[kind]
    weights = {k: v.to(torch.float16) for k, v in load_file(tmp_path / file).items()}
    save_file(weights, tmp_path / file)
    if kind == "adapter":
        import json
        config = json.loads((tmp_path / "adapter_config.json").read_text())
        config.pop("weights")
        (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    assert load(model, tmp_path) == "c"
