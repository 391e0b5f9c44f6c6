"""The anchors' small accessors: has_adapters, get_adapter, adapter_to, adapter_fusion_to."""

from __future__ import annotations

import pytest
import torch

import adapterkit
from adapterkit import AdapterError, Fuse

import archs


def test_get_adapter_lists_its_modules_by_layer_and_location():
    model = archs.randomised("bert", {"p": "prefix_tuning[prefix_length=2,bottleneck_size=4]", "l": "lora",
                                      "inv": "seq_bn_inv"})
    assert model.has_adapters() and not adapterkit.init(archs.model("bert")).has_adapters()
    lora = model.get_adapter("l")
    assert set(lora) == {0, 1} and set(lora[0]) == {"attn_q", "attn_v"}
    assert lora[1]["attn_v"] is model.adapterkit["l"].layers["1"]["attn_v"]
    assert set(model.get_adapter("p")) == {-1} and set(model.get_adapter("p")[-1]) == {"prefix"}
    inv = model.get_adapter("inv")
    assert set(inv) == {-1, 0, 1} and set(inv[-1]) == {"invertible"} and set(inv[0]) == {"output_adapter"}
    with pytest.raises(AdapterError, match="'x' does not exist"):
        model.get_adapter("x")


def test_adapter_to_casts_one_adapter():
    model = archs.randomised("bert", {"a": "lora", "b": "pfeiffer"})
    model.set_active_adapters("a")
    with torch.no_grad():
        expected = model(**archs.inputs("bert")).last_hidden_state
    model.adapter_to("a", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.adapterkit["a"].parameters())
    assert all(p.dtype == torch.float32 for p in model.adapterkit["b"].parameters())
    model.adapter_to("a", dtype=torch.float32)  # float32 -> float64 -> float32 is exact
    with torch.no_grad():
        torch.testing.assert_close(model(**archs.inputs("bert")).last_hidden_state, expected, atol=0, rtol=0)


def test_adapter_fusion_to():
    model = archs.randomised("bert", {"a": "pfeiffer", "b": "pfeiffer"})
    model.add_adapter_fusion(Fuse("a", "b"))
    model.adapter_fusion_to(Fuse("a", "b"), dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.adapterkit_fusion["a,b"].parameters())
    with pytest.raises(AdapterError, match="no AdapterFusion named 'x,y'"):
        model.adapter_fusion_to(["x", "y"])


@pytest.mark.parametrize("config", ["lora", "ia3", "pfeiffer", "seq_bn_inv"])
def test_float32_adapter_on_a_bfloat16_model_runs_under_autocast(config):
    model = archs.randomised("bert", {"a": config})
    model.to(torch.bfloat16)
    model.adapter_to("a", dtype=torch.float32)
    model.set_active_adapters("a")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**archs.inputs("bert")).last_hidden_state
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
