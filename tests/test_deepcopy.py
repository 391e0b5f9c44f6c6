"""`copy.deepcopy(model)` (EMA copies, teacher/student, trainers) gives an independent model that computes the same:
its hooks, sites and per-row routing act on the copy's adapters, not on the original's."""

from __future__ import annotations

import copy

import pytest
import torch

import archs
from adapterkit import composition as ac


def _out(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch, **kwargs).last_hidden_state


# post-LN output modules (bert) and sublayer hooks (gpt2, llama; these refuse per-row routing of bottlenecks)
CASES = [(arch, setup) for arch in ("bert", "gpt2", "llama") for setup in ("a", "l", "p", ("a", "l"))]
CASES.append(("bert", "routed"))


@pytest.mark.parametrize("arch,setup", CASES)
def test_deepcopy_computes_the_same_and_is_independent(arch, setup):
    model = archs.randomised(arch, {"a": "seq_bn", "l": "lora", "p": "prefix_tuning"})
    clone = copy.deepcopy(model)
    assert clone.adapter_state is not model.adapter_state
    batch = archs.inputs(arch, batch=3)
    kwargs = {}
    if setup == "routed":
        kwargs = {"adapter_names": ["l", None, "a"]}
        model.set_active_adapters(None)
        clone.set_active_adapters(None)
    else:
        model.set_active_adapters(ac.Stack(*setup) if isinstance(setup, tuple) else setup)
        clone.set_active_adapters(ac.Stack(*setup) if isinstance(setup, tuple) else setup)
    expected = _out(model, batch, **kwargs)
    torch.testing.assert_close(_out(clone, batch, **kwargs), expected, atol=0, rtol=0)
    # changing the copy leaves the original alone
    with torch.no_grad():
        for p in clone.adapterkit.parameters():
            p.mul_(0.5)
    clone.delete_adapter("l")
    assert "l" in model.adapters_config
    torch.testing.assert_close(_out(model, batch, **kwargs), expected, atol=0, rtol=0)


def test_deepcopy_of_a_fused_model():
    model = archs.randomised("bert", {"a": "seq_bn", "b": "seq_bn"})
    model.add_adapter_fusion(["a", "b"], set_active=True)
    clone = copy.deepcopy(model)
    batch = archs.inputs("bert")
    torch.testing.assert_close(_out(clone, batch), _out(model, batch), atol=0, rtol=0)

