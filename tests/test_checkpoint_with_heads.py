"""save_adapter / load_adapter carry the head named like the adapter (AdapterModel), and a bad head file leaves the
model exactly as it was."""

from __future__ import annotations

import pytest
import torch

import adapterkit
from adapterkit import AdapterError

from conftest import tiny_config


def model_with_head(seed=0):
    torch.manual_seed(seed)
    model = adapterkit.AutoAdapterModel.from_config(tiny_config())
    model.add_adapter("sst", config="pfeiffer")
    model.add_classification_head("sst", num_labels=3)
    return model.eval()


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_adapter_and_head_round_trip(tmp_path, batch):
    model = model_with_head()
    model.set_active_adapters("sst")
    with torch.no_grad():
        for p in model.adapterkit["sst"].parameters():
            p.add_(0.1)
    expected = logits(model, batch)
    model.save_adapter(tmp_path / "sst", "sst")
    assert (tmp_path / "sst" / "head_config.json").is_file()
    other = adapterkit.AutoAdapterModel.from_config(tiny_config())
    other.load_state_dict(model.state_dict(), strict=False)  # same base weights
    assert other.load_adapter(tmp_path / "sst", set_active=True) == "sst"
    assert "sst" in other.heads and other.active_head == "sst"
    torch.testing.assert_close(logits(other.eval(), batch), expected, atol=0, rtol=0)


def test_with_head_false_skips_the_head(tmp_path):
    model = model_with_head()
    model.save_adapter(tmp_path / "a", "sst", with_head=False)
    assert not (tmp_path / "a" / "head_config.json").exists()


def test_bad_head_file_leaves_model_unchanged(tmp_path):
    model = model_with_head()
    model.save_adapter(tmp_path / "sst", "sst")
    weights = tmp_path / "sst" / "head.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    other = adapterkit.AutoAdapterModel.from_config(tiny_config())
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(AdapterError, match="head.safetensors"):
        other.load_adapter(tmp_path / "sst")
    assert other.adapters_config == {} and set(other.heads) == set()
    assert set(other.state_dict()) == set(before)
