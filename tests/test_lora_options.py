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


def _peft_lora_dir(directory, seed, **fields):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(tiny_model("bert"), peft.LoraConfig(target_modules=["query", "value"], **fields))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(directory)
    return directory


def test_cat_average_equals_peft_add_weighted_adapter(batch, tmp_path):
    fields = dict(r=4, lora_alpha=6)
    a, b = _peft_lora_dir(tmp_path / "a", 0, **fields), _peft_lora_dir(tmp_path / "b", 1, **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.PeftModel.from_pretrained(tiny_model("bert"), a, adapter_name="a")
        theirs.load_adapter(b, adapter_name="b")
        theirs.add_weighted_adapter(["a", "b"], [0.7, -0.4], "m", combination_type="cat")
        theirs.set_adapter("m")
    with torch.no_grad():
        expected = theirs.eval()(**batch).last_hidden_state
    model = adapterkit.init(tiny_model("bert"))
    model.load_adapter(a, load_as="a")
    model.load_adapter(b, load_as="b")
    model.average_adapter("m", {"a": 0.7, "b": -0.4}, combine_strategy="cat", normalize_weights=False,
                          set_active=True)
    assert model.adapters_config["m"].r == 8 and model.adapters_config["m"].scaling == 1.0
    with adapterkit.AdapterSetup(None):
        assert (outputs(model, batch) - expected).abs().max() > 1e-2
    assert (outputs(model, batch) - expected).abs().max() <= ATOL


def test_cat_refuses_ia3_and_gated_lora():
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("i", config="ia3")
    model.add_adapter("j", config="ia3")
    with pytest.raises(adapterkit.AdapterError, match="combine_strategy 'cat' is for LoRA"):
        model.average_adapter("m", ["i", "j"], combine_strategy="cat")


def test_cat_of_rslora_adapters_is_the_weighted_sum_of_their_updates(tmp_path):
    """peft's "cat" keeps the sources' `use_rslora` on the new adapter (r = lora_alpha = sum r_i), so its update is
    sqrt(sum r_i) times the weighted sum it folded into A; ours is the weighted sum (scaling 1, rsLoRA off)."""
    fields = dict(r=4, lora_alpha=6, use_rslora=True)
    a, b = _peft_lora_dir(tmp_path / "a", 0, **fields), _peft_lora_dir(tmp_path / "b", 1, **fields)
    model = adapterkit.init(tiny_model("bert"))
    model.load_adapter(a, load_as="a")
    model.load_adapter(b, load_as="b")
    model.average_adapter("m", {"a": 0.7, "b": -0.4}, combine_strategy="cat", normalize_weights=False)
    state = model.adapter_state
    for key, module in state.layer_modules("m"):
        expected = 0.7 * state.module_at("a", key).delta_weight() - 0.4 * state.module_at("b", key).delta_weight()
        torch.testing.assert_close(module.delta_weight(), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_peft_inits_start_as_the_identity_and_export_to_adapterhub(init, batch, tmp_path):
    model = adapterkit.init(tiny_model("bert"))
    with adapterkit.AdapterSetup(None):
        base = outputs(model, batch)
    model.add_adapter("a", config=adapterkit.LoRAConfig(r=8, init_weights=init), set_active=True)
    modules = [m for _, m in model.adapter_state.layer_modules("a")]
    assert all(m.lora_A.abs().sum() > 0 for m in modules)
    if init == "gaussian":
        a = torch.cat([m.lora_A.flatten() for m in modules])
        assert abs(a.std().item() - 1 / 8) < 0.02 and all(not m.lora_B.any() for m in modules)
    else:
        assert all(m.lora_B.abs().sum() > 0 and (m.lora_B @ m.lora_A).abs().max() < 1e-6 for m in modules)
    assert (outputs(model, batch) - base).abs().max() < 1e-5
    model.save_adapter(tmp_path, "a", format="adapterhub")
    assert json.loads((tmp_path / "adapter_config.json").read_text())["config"]["init_weights"] == "lora"


def test_orthogonal_init_needs_an_even_rank():
    with pytest.raises(AdapterConfigError, match="needs an even r"):
        adapterkit.LoRAConfig(r=3, init_weights="orthogonal")
