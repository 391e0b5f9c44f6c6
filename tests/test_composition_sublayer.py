"""Composition blocks at sublayer-hook sites (layers that add the residual themselves: pre-LN GPT-2 / Llama / T5 /
ViT, inline post-LN BART): each row of BatchSplit, Parallel and per-example routing gets exactly what it gets alone,
and Average of one adapter is that adapter; the same checks test_composition.py makes at BERT's residual sites."""

from __future__ import annotations

import pytest
import torch

from adapterkit import AdapterSetup, Average, BatchSplit, Parallel, Stack

import archs

BN = {"a": "pfeiffer", "h": "houlsby", "par": "parallel", "off": "pfeiffer[original_ln_after=False]"}
ARCHES = ["gpt2", "llama", "t5", "bart", "vit"]


def _model(arch, configs=BN):
    return archs.randomised(arch, configs).eval()


def _run(model, inputs, setup=None, **kwargs):
    with torch.no_grad():
        if setup is None:
            return model(**inputs, **kwargs).last_hidden_state
        with AdapterSetup(setup):
            return model(**inputs, **kwargs).last_hidden_state


def _alone(model, inputs, setup, row):
    return _run(model, {k: v[row:row + 1] for k, v in inputs.items()}, setup)[0]


def _configs(arch):
    # BART's layers norm the sublayer output plus the residual: original_ln_after=False cannot run there
    return {k: v for k, v in BN.items() if not (arch == "bart" and k == "off")}


@pytest.mark.parametrize("arch", ARCHES)
def test_batch_split_rows_equal_their_adapter_alone(arch):
    configs = _configs(arch)
    model = _model(arch, configs)
    children = list(configs)[:3] + [Stack("a", "h")]
    inputs = archs.inputs(arch, batch=len(children))
    setup = BatchSplit(*children, batch_sizes=1)
    out = _run(model, inputs, setup)
    for row, child in enumerate(children):
        torch.testing.assert_close(out[row], _alone(model, inputs, child, row), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[row], _run(model, inputs, child)[row], atol=1e-5, rtol=0)
    assert (out - _run(model, inputs)).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHES)
def test_parallel_and_average_of_one(arch):
    model = _model(arch, _configs(arch))
    inputs = archs.inputs(arch, batch=2)
    out = _run(model, inputs, Parallel("a", "par"))
    assert out.shape[0] == 4
    torch.testing.assert_close(out[:2], _run(model, inputs, "a"), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2:], _run(model, inputs, "par"), atol=1e-5, rtol=0)
    torch.testing.assert_close(_run(model, inputs, Average("h")), _run(model, inputs, "h"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bart"])
def test_per_example_routing(arch):
    model = _model(arch, _configs(arch))
    inputs = archs.inputs(arch, batch=3)
    names = ["h", None, "a"]
    out = _run(model, inputs, adapter_names=names)
    for row, name in enumerate(names):
        torch.testing.assert_close(out[row], _alone(model, inputs, name, row), atol=1e-5, rtol=0)


def test_average_weights_and_training():
    """Average at a pre-LN site is `sum_i w_i * output_i`: weights (1, 0) give adapter a alone, (0, 1) b alone; in
    training, gradients reach both adapters."""
    model = _model("gpt2", {"a": "pfeiffer", "b": "pfeiffer"})
    inputs = archs.inputs("gpt2", batch=2)
    for weights, alone in (([1.0, 0.0], "a"), ([0.0, 1.0], "b")):
        torch.testing.assert_close(_run(model, inputs, Average("a", "b", weights=weights)), _run(model, inputs, alone),
                                   atol=1e-5, rtol=0)
    model.set_active_adapters(Average("a", "b", weights=[0.5, 0.5]))
    model.train_adapter(Average("a", "b", weights=[0.5, 0.5]))
    out = model(**inputs).last_hidden_state
    out.pow(2).mean().backward()
    grads = {n.split(".")[0] for n, p in model.adapterkit.named_parameters() if p.grad is not None
             and p.grad.abs().sum() > 0}
    assert grads == {"a", "b"}
