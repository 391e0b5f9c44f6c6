"""An adapter on the meta device (no data) that runs on real inputs is an error, never silent garbage.

torch computes F.linear / mm of a real input and a meta weight without complaint (values that change from call
to call, then NaN), so LoRA would; the projection site refuses it for every method that runs there, on the
fused and the hook path, composed or routed. A model entirely on the meta device (meta inputs) still runs.
"""

from __future__ import annotations

import pytest
import torch

import adapterkit
from adapterkit import AdapterError, Average, Stack

from conftest import tiny_model

PROJECTION_CONFIGS = ["lora", "lora[r=4,alpha=16]", "lora[use_gating=True]", "lora[dropout=0.1]", "ia3",
                      "ia3[intermediate_lora=False,output_lora=True,scale_inputs=['output']]"]


def _ids():
    return torch.randint(2, 99, (2, 5), generator=torch.Generator().manual_seed(0))


def _on_meta(config, setup=None, train=False, others=()):
    model = adapterkit.init(tiny_model())
    model.add_adapter("x", config)
    for name in others:
        model.add_adapter(name, "lora")
    model.set_active_adapters(setup or "x")
    model.adapter_to("x", device="meta")
    model.train(train)
    return model


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("config", PROJECTION_CONFIGS)
def test_projection_adapters_on_meta_raise(config, train, grad):
    model = _on_meta(config, train=train)
    with torch.set_grad_enabled(grad), pytest.raises(AdapterError, match=r"adapter 'x'.*meta device"):
        model(input_ids=_ids())


@pytest.mark.parametrize("setup", [Stack("x", "y"), Average("x", "y")], ids=["stack", "average"])
def test_composed_lora_on_meta_raises(setup):
    model = _on_meta("lora", setup=setup, others=["y"])
    with pytest.raises(AdapterError, match=r"adapter 'x'.*meta device"):
        model(input_ids=_ids())


def test_routed_lora_on_meta_raises():
    model = _on_meta("lora", others=["y"])
    with pytest.raises(AdapterError, match=r"adapter 'x'.*meta device"):
        model(input_ids=_ids(), adapter_names=["x", "y"])


@pytest.mark.parametrize("config", ["seq_bn", "prefix_tuning"])
def test_other_methods_on_meta_raise_too(config):
    with pytest.raises((AdapterError, RuntimeError)):
        _on_meta(config)(input_ids=_ids())


def test_a_model_entirely_on_meta_still_runs_on_meta_inputs():
    model = _on_meta("lora")
    model.to("meta")
    with torch.no_grad():
        out = model(input_ids=_ids().to("meta"))
    assert out.last_hidden_state.is_meta


def test_moved_back_it_runs_again():
    model = adapterkit.init(tiny_model())
    model.add_adapter("x", "lora[init_weights=bert]", set_active=True)
    with torch.no_grad():
        expected = model(input_ids=_ids()).last_hidden_state
    weights = {k: v.clone() for k, v in model.adapterkit["x"].state_dict().items()}
    model.adapter_to("x", device="meta")
    model.adapterkit["x"].to_empty(device="cpu")
    model.adapterkit["x"].load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=_ids()).last_hidden_state, expected)
