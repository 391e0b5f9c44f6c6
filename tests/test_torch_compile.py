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
                                         ("llama", "lora"), ("llama", "double_seq_bn_inv"),
                                         ("gpt2", "mtl_lora[n_up_projection=2]")])
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


# one of each kind of module beyond the cases above (parallel, invertible, input scaling, flat prefix, PHM, gates,
# unions). All 15 method configs of tools/cuda_check.py compiled with fullgraph=True in training (two calls, no
# recompile) on BERT, GPT-2, Llama, BART and T5 in a one-off sweep (2026-11-27)
METHODS = ["par_bn", "double_seq_bn_inv", "ia3[intermediate_lora=False,output_lora=True,scale_inputs=['output']]",
           "prefix_tuning_flat", "compacter++[reduction_factor=4]", "seq_bn[use_gating=True]",
           "lora[use_gating=True]", "dora", "dora[dora_semantics='peft',dropout=0.1]",
           "vera[r=4,intermediate_lora=True]", "adapterplus[reduction_factor=4]"]


@pytest.mark.parametrize("arch,config", [("bert", m) for m in METHODS]
                         + [("t5", "prefix_tuning"), ("bart", "mam"), ("gpt2", "unipelt"),
                            ("llama", "compacter[reduction_factor=4]"), ("gpt2", "dora[attn_matrices=['q','k','v']]"),
                            ("llama", "dora[attn_matrices=['k','v']]"),
                            ("gpt2", "vera"), ("llama", "vera"),
                            ("gpt2", "dvora"), ("llama", "dvora")])
def test_every_method_compiles_as_one_graph_once(arch, config):
    torch._dynamo.reset()
    model = _model(arch, config)
    batch = archs.inputs(arch)
    model.eval()  # no dropout: the compiled and eager outputs compare
    with torch.no_grad():
        eager = model(**batch)[0]
    model.train()  # the graph that training compiles
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(**batch)[0].float().pow(2).mean().backward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled(**batch)  # the second training call reuses the first's graph
    model.eval()
    with torch.no_grad():
        out = compiled(**batch)[0]  # eval mode and no_grad: another graph
        with torch._dynamo.config.patch(error_on_recompile=True):
            again = compiled(**batch)[0]
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(again, eager, atol=1e-6, rtol=1e-6)


def test_skip_layers_compile_as_one_graph():
    """AdapterDrop: the skipped layers are read per forward (state.skipped), a guard, not a graph break."""
    torch._dynamo.reset()
    model = _model("bert", "seq_bn")
    model.eval()
    batch = archs.inputs("bert")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        for skip in ([0], [1]):
            model.set_active_adapters("a", skip_layers=skip)
            eager = model(**batch)[0]
            torch.testing.assert_close(compiled(**batch)[0], eager, atol=1e-6, rtol=1e-6)
        model.set_active_adapters("a")
        assert (compiled(**batch)[0] - eager).abs().max() > 1e-4


@pytest.mark.parametrize("kind,block", [(kind, block) for kind in ("seq_bn", "lora")
                                        for block in ("stack", "parallel", "batch_split", "average")]
                         + [("seq_bn", "fuse")])  # Fuse combines bottleneck adapters
def test_compositions_compile_as_one_graph(kind, block):
    from adapterkit import composition as ac
    setup = {"stack": ac.Stack("a", "b"), "parallel": ac.Parallel("a", "b"), "fuse": ac.Fuse("a", "b"),
             "batch_split": ac.BatchSplit("a", "b", batch_sizes=[1, 2]),
             "average": ac.Average("a", "b", weights=[0.3, 0.7])}[block]
    torch._dynamo.reset()
    model = archs.randomised("bert", {"a": kind, "b": kind}, scale=0.1)
    if block == "fuse":
        model.add_adapter_fusion(setup)
    model.set_active_adapters(setup)
    model.eval()
    batch = archs.inputs("bert")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        out = compiled(**batch)[0]
        with torch._dynamo.config.patch(error_on_recompile=True):
            again = compiled(**batch)[0]
        eager = model(**batch)[0]
    torch.testing.assert_close(out, eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(again, eager, atol=1e-6, rtol=1e-6)
