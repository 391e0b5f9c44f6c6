"""torch.compile traces a model with adapters as whole graphs (no graph break at any adapter site) and computes
what the eager model computes. The sites ask for the active setup on every call; outside any AdapterSetup that
answer must come from plain Python state dynamo can guard on (context.py), not from a ContextVar."""

from __future__ import annotations

import pytest
import torch

import archs
from adapterkit import AdapterSetup


def _model(arch: str, config: str):
    model = archs.randomised(arch, {"a": config}, scale=0.1)
    model.train_adapter("a")
    return model


@pytest.mark.parametrize("arch,config", [("bert", "lora"), ("bert", "seq_bn"), ("bert", "prefix_tuning"),
                                         ("llama", "lora"), ("llama", "double_seq_bn_inv")])
def test_no_graph_break_and_same_outputs_and_gradients(arch, config):
    torch._dynamo.reset()
    model = _model(arch, config)
    batch = archs.inputs(arch)
    model.train()
    eager = model(**batch).last_hidden_state
    eager.pow(2).mean().backward()
    expected = {n: p.grad.clone() for n, p in model.adapterkit.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
    out = compiled(**batch).last_hidden_state
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    out.pow(2).mean().backward()
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.adapterkit.named_parameters())[name].grad, grad, atol=1e-6, rtol=1e-5)


def test_adapter_setup_still_overrides_inside_and_not_after():
    model = _model("bert", "lora")
    model.add_adapter("b", config="seq_bn")
    model.set_active_adapters("a")
    batch = archs.inputs("bert")
    model.eval()
    with torch.no_grad():
        with_a = model(**batch).last_hidden_state
        with AdapterSetup("b"):
            with AdapterSetup(None):
                plain = model(**batch).last_hidden_state
            with_b = model(**batch).last_hidden_state
        after = model(**batch).last_hidden_state
        model.set_active_adapters(None)
        expected_plain = model(**batch).last_hidden_state
        model.set_active_adapters("b")
        expected_b = model(**batch).last_hidden_state
    torch.testing.assert_close(plain, expected_plain, atol=0, rtol=0)
    torch.testing.assert_close(with_b, expected_b, atol=0, rtol=0)
    torch.testing.assert_close(after, with_a, atol=0, rtol=0)
    assert not torch.equal(with_a, with_b)


@pytest.mark.parametrize("arch,config", [("bert", "lora"), ("bert", "seq_bn"), ("bert", "prefix_tuning"),
                                         ("gpt2", "lora")])
def test_no_graph_break_in_inference_mode(arch, config):
    torch._dynamo.reset()
    model = _model(arch, config)
    model.eval()
    batch = archs.inputs(arch)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    # the second call reuses the first's graph: set_active_adapters built the plan cache dynamo guards on
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        out = compiled(**batch).last_hidden_state.clone()
        again = compiled(**batch).last_hidden_state
        eager = model(**batch).last_hidden_state
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(again, eager, atol=1e-6, rtol=1e-6)
