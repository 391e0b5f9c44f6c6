"""The prefix MLP runs once per forward for all layers (`PrefixTuning.prefill`), and that reuse never changes a
result: gradient checkpointing (reentrant or not), gradient accumulation, parameter updates between forwards,
frozen prefixes and deepcopy all give what computing every layer's rows afresh gives."""

from __future__ import annotations

import copy

import pytest
import torch

import archs


def _model(arch="bert", config="prefix_tuning[prefix_length=5,bottleneck_size=16]", cls=None):
    model = archs.randomised(arch, {"p": config}, cls=cls)
    model.train_adapter("p")
    return model


def _loss(model, batch):
    out = model(**batch)
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).pow(2).mean()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.adapterkit.named_parameters() if p.grad is not None}


def _uncached(monkeypatch):
    """Every layer computes its own rows (the path torch.compile traces): the reference."""
    from adapterkit.methods.prefix_tuning import PrefixTuning
    monkeypatch.setattr(PrefixTuning, "prefill", lambda self: None)
    monkeypatch.setattr(PrefixTuning, "_valid_cache", lambda self: None)


@pytest.mark.parametrize("arch", ["bert", "bart", "llama"])
def test_the_mlp_runs_once_per_forward_and_gives_the_per_layer_result(arch, monkeypatch):
    model = _model(arch)
    calls = []
    model.adapterkit["p"].shared["prefix"].control_trans[0].register_forward_hook(lambda *a: calls.append(1))
    batch = archs.inputs(arch)
    _loss(model, batch).backward()
    assert len(calls) == 1
    cached = _grads(model)
    reference = _model(arch)
    _uncached(monkeypatch)
    _loss(reference, batch).backward()
    expected = _grads(reference)
    assert cached.keys() == expected.keys() and cached
    for name, grad in expected.items():
        torch.testing.assert_close(cached[name], grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing(reentrant):
    from transformers import BertForMaskedLM
    batch = archs.inputs("bert")
    plain, ckpt = _model(cls=BertForMaskedLM), _model(cls=BertForMaskedLM)
    enable = getattr(ckpt, "activation_checkpointing_enable", None) or ckpt.gradient_checkpointing_enable
    enable({"use_reentrant": reentrant})
    ckpt.train()
    plain.train()
    _loss(plain, batch).backward()
    _loss(ckpt, batch).backward()
    expected, got = _grads(plain), _grads(ckpt)
    assert got.keys() == expected.keys() and got
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-5)


def test_gradient_accumulation_and_a_second_forward_after_a_backward():
    model, batch = _model(), archs.inputs("bert")
    _loss(model, batch).backward()
    once = _grads(model)
    _loss(model, batch).backward()  # same parameters: the first forward's rows are used up, so new ones
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, 2 * once[name], atol=1e-6, rtol=1e-5)


def test_two_forwards_then_one_backward_share_the_rows():
    model, batch = _model(), archs.inputs("bert")
    (_loss(model, batch) + _loss(model, batch)).backward()
    both = _grads(model)
    model.zero_grad(set_to_none=True)
    _loss(model, batch).backward()
    for name, grad in _grads(model).items():
        torch.testing.assert_close(both[name], 2 * grad, atol=1e-6, rtol=1e-5)


def test_updated_parameters_are_seen_by_the_next_forward():
    model, batch = _model(), archs.inputs("bert")
    model.eval()
    with torch.no_grad():
        model(**batch)  # caches rows computed without grad
        with torch.no_grad():
            for p in model.adapterkit.parameters():
                p.mul_(1.5)  # in place, like an optimizer step
        after = model(**batch).last_hidden_state
    fresh = copy.deepcopy(model)
    fresh.adapterkit["p"].shared["prefix"].__dict__.pop("_rows_cache", None)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).last_hidden_state, after, atol=0, rtol=0)
    model.adapterkit["p"].requires_grad_(False)  # frozen: rows without a graph, then with one again
    assert not model(**batch).last_hidden_state.requires_grad
    model.adapterkit["p"].requires_grad_(True)
    _loss(model, batch).backward()
    assert _grads(model)


def test_deepcopy_after_a_forward_with_a_graph():
    model, batch = _model(), archs.inputs("bert")
    loss = _loss(model, batch)  # rows with a graph are cached now
    clone = copy.deepcopy(model)
    assert "_rows_cache" not in clone.adapterkit["p"].shared["prefix"].__dict__
    loss.backward()
    torch.testing.assert_close(_loss(clone, batch), _loss(model, batch), atol=1e-6, rtol=1e-6)


class _Names(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_layers_take_views_of_one_unbind_and_the_backward_gathers_them_once():
    """Per-layer slices/selects of the MLP output would each scatter their gradient into a zero-filled tensor of
    the whole output, summed layer by layer; one unbind stacks them in one kernel."""
    model, batch = _model(), archs.inputs("bert")
    loss = _loss(model, batch)
    with _Names() as seen:
        loss.backward()
    assert "stack" in seen.names
    assert not {"select_backward", "slice_backward"} & set(seen.names), sorted(set(seen.names))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_prefix_dropout_keeps_the_per_layer_path(dropout):
    config = f"prefix_tuning[prefix_length=5,bottleneck_size=16,dropout={dropout}]"
    model, batch = _model(config=config), archs.inputs("bert")
    model.eval()  # dropout off: both paths must give the same outputs
    with torch.no_grad():
        cached = model(**batch).last_hidden_state
    prefix = model.adapterkit["p"].shared["prefix"]
    assert (prefix.__dict__["_rows_cache"][3] is None) == (dropout > 0)
    prefix.__dict__.pop("_rows_cache")
    prefix.__dict__["prefill"] = lambda: None  # every layer computes its own rows
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).last_hidden_state, cached, atol=1e-6, rtol=1e-6)
    model.train()
    _loss(model, batch).backward()  # with dropout active in training
    assert _grads(model)
