"""`average_adapter` equals the `adapters` package's (fixtures from tools/make_average_fixtures.py: two randomised
adapters per case on the tiny reference BERT, averaged there, the averaged adapter's output recorded), and refuses
what it cannot average, before the model changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adapterkit
from adapterkit import AdapterError
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub

from test_reference_adapters import FIXTURES as REF, load_base

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_average"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
INPUTS = load_file(REF / "bert" / "inputs.safetensors")


def with_sources(case: str):
    """The tiny BERT with the case's two source adapters "a" and "b", loaded from the package's weights."""
    config = config_from_adapterhub(json.loads((FIXTURES / case / "adapter_config.json").read_text()))
    model = adapterkit.init(load_base("bert"))
    for name in ("a", "b"):
        model.add_adapter(name, config=config)
        state = model.adapter_state
        weights = state_dict_from_adapterhub(load_file(FIXTURES / case / f"{name}.safetensors"), name,
                                             state.interface, config, state=state)
        model.adapterkit[name].load_state_dict(weights)
    return model


def test_fixture_set_covers_the_strategies_and_methods():
    cases = MANIFEST["cases"]
    assert {c["average"].get("combine_strategy", "linear") for c in cases.values()} == {
        "linear", "lora_linear_only_negate_b", "lora_delta_w_svd"}
    assert {c["config_class"] for c in cases.values()} >= {"SeqBnInvConfig", "LoRAConfig", "IA3Config",
                                                          "PrefixTuningConfig", "CompacterConfig"}


@pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
def test_matches_adapters_package(case):
    model = with_sources(case)
    average = json.loads((FIXTURES / case / "average.json").read_text())
    model.average_adapter("avg", ["a", "b"], set_active=True, **average)
    expected = load_file(FIXTURES / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**INPUTS).last_hidden_state
        with adapterkit.AdapterSetup("a"):
            assert (model(**INPUTS).last_hidden_state - expected).abs().max() > 1e-3  # not just a source
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_svd_keeps_the_weighted_update_when_the_rank_changes():
    """At svd_rank == r the package's result (fixture above); at full rank (r of all sources together) the
    truncation is exact, so the merged weight equals the weighted sum of the sources' merged updates."""
    model = with_sources("lora_svd")
    model.average_adapter("avg", {"a": 0.3, "b": 0.7}, combine_strategy="lora_delta_w_svd", svd_rank=8)
    assert model.adapters_config["avg"].r == 8
    state = model.adapter_state
    for key, module in state.layer_modules("avg"):
        expected = 0.3 * state.module_at("a", key).delta_weight() + 0.7 * state.module_at("b", key).delta_weight()
        torch.testing.assert_close(module.delta_weight(), expected, atol=1e-5, rtol=0)


def test_refusals_leave_the_model_unchanged():
    model = with_sources("lora_linear_unnormalised")
    model.add_adapter("p", config="pfeiffer")
    model.add_adapter("r4", config="lora[r=4]")
    before = dict(model.adapters_config)
    cases = [
        ((["a", "p"],), {}, "'p' has another config than 'a'"),
        ((["a", "r4"],), {}, "'r4' has another config"),
        ((["a", "b"],), {"combine_strategy": "bogus"}, "unknown combine_strategy 'bogus'; allowed: linear"),
        ((["p"],), {"combine_strategy": "lora_delta_w_svd", "svd_rank": 2}, "is for LoRA adapters"),
        ((["a", "b"],), {"combine_strategy": "lora_delta_w_svd"}, "svd_rank goes with"),
        ((["a", "b"],), {"svd_rank": 2}, "svd_rank goes with"),
        ((["a", "b"],), {"combine_strategy": "lora_delta_w_svd", "svd_rank": 99}, "svd_rank=99 must be between 1"),
        ((["a", "b"],), {"combine_strategy": "lora_delta_w_svd", "svd_rank": 2.5}, "svd_rank=2.5 must be a whole"),
        ((["a", "b"],), {"weights": [1.0, -1.0]}, "sum to 0"),
        ((["a", "b"],), {"weights": [1.0]}, "1 weights for 2 adapters"),
        (({"a": 1.0},), {"weights": [1.0]}, "either in adapter_list"),
        ((["a", "missing"],), {}, "'missing' does not exist"),
        (([],), {}, "at least one adapter"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(AdapterError, match=message):
            model.average_adapter("avg", *args, **kwargs)
    with pytest.raises(AdapterError, match="cannot be one of its sources"):
        model.average_adapter("a", ["a", "b"], overwrite_ok=True)
    assert dict(model.adapters_config) == before and "avg" not in model.adapterkit


@pytest.mark.parametrize("arch,config", [("bart", "unipelt"), ("t5", "mam"), ("gpt2", "compacter[reduction_factor=4]")])
def test_weights_one_and_zero_give_the_first_adapter(arch, config):
    """Any method, unions and encoder-decoder models included: weights (1, 0) reproduce the first adapter."""
    import archs
    model = archs.randomised(arch, {"a": config, "b": config})
    model.average_adapter("avg", ["a", "b"], weights=[1.0, 0.0], set_active=True)
    inputs = archs.inputs(arch)
    with torch.no_grad():
        averaged = model(**inputs).last_hidden_state
        model.set_active_adapters("a")
        first = model(**inputs).last_hidden_state
        model.set_active_adapters("b")
        second = model(**inputs).last_hidden_state
    assert (first - second).abs().max() > 1e-3
    torch.testing.assert_close(averaged, first, atol=0, rtol=0)
