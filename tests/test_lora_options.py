"""LoRA options from peft: rsLoRA (alpha / sqrt(r)), checked against peft and through the AdapterHub format."""

from __future__ import annotations

import json
import warnings

import peft
import pytest
import torch

import adapterkit
from adapterkit import AdapterConfigError

from ckpt_helpers import outputs, randomise
from conftest import tiny_model

ATOL = 1e-5


def _load_in_peft(arch, directory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(tiny_model(arch), directory).eval()



def test_rslora_scales_by_sqrt_r_and_round_trips_through_peft_and_adapterhub(batch, tmp_path):
    config = adapterkit.LoRAConfig(r=4, alpha=6, use_rslora=True)
    assert config.scaling == 3.0
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config=config, set_active=True)
    randomise(model.adapterkit["a"])
    expected = outputs(model, batch)
    model.save_adapter(tmp_path / "peft", "a", format="peft")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["use_rslora"] is True
    with torch.no_grad():
        got = _load_in_peft("bert", tmp_path / "peft")(**batch).last_hidden_state
    assert (got - expected).abs().max() <= ATOL
    model.save_adapter(tmp_path / "hub", "a", format="adapterhub")  # the package has no rsLoRA: alpha = 3 * r
    hub = json.loads((tmp_path / "hub" / "adapter_config.json").read_text())["config"]
    assert "use_rslora" not in hub and hub["alpha"] == 12.0
    for directory in ("peft", "hub"):
        back = adapterkit.init(tiny_model("bert"))
        back.load_adapter(tmp_path / directory, load_as="a", set_active=True)
        assert (outputs(back, batch) - expected).abs().max() <= ATOL
    with pytest.raises(AdapterConfigError, match="use_rslora is for LoRA"):
        adapterkit.IA3Config(use_rslora=True)
