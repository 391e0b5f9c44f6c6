"""Plain forwards with `adapter_names` keep their routing (compose/routing.py): a loop calling the model with the
same rows builds it once. What is kept must never go stale: a change of weights, adapters or setups between two
forwards shows in the second forward exactly as in a fresh model."""

from __future__ import annotations

import torch

import adapterkit

import archs

NAMES = ["x", "__base__", "y", "z", "x", None]


def _model():
    return archs.randomised("llama", {"x": "lora[r=4]", "y": "lora[r=8,alpha=4]", "z": "ia3"})


def _out(model, inputs, names=NAMES):
    return model(**inputs, adapter_names=names).last_hidden_state


def _alone(model, inputs, names=NAMES):
    rows = []
    for row, name in enumerate(names):
        one = {k: v[row:row + 1] for k, v in inputs.items()}
        with adapterkit.AdapterSetup(None if name == "__base__" else name):
            rows.append(model(**one).last_hidden_state[0])
    return torch.stack(rows)


def test_a_plain_forward_reuses_its_routing_and_a_change_of_adapters_drops_it():
    model = _model()
    inputs = archs.inputs("llama", batch=len(NAMES))
    kept = model.adapter_state.plans.routings
    with torch.no_grad():
        first = _out(model, inputs)
        (routing,) = kept.values()
        torch.testing.assert_close(_out(model, inputs), first, atol=0, rtol=0)
        assert list(kept.values()) == [routing]  # the same object served the second forward
        _out(model, inputs, list(reversed(NAMES)))  # other rows: a routing of its own
        assert len(kept) == 2
        model.add_adapter("w", config="lora[r=2]")
        assert not kept  # dropped with the plans
        torch.testing.assert_close(_out(model, inputs), first, atol=0, rtol=0)


def test_kept_routings_are_bounded():
    model = _model()
    inputs = archs.inputs("llama", batch=2)
    with torch.no_grad():
        for pair in [("x", "y"), ("y", "x"), ("x", "z"), ("z", "x"), ("y", "z"), ("z", "y")]:
            _out(model, inputs, list(pair))
    assert len(model.adapter_state.plans.routings) == model.adapter_state.plans.ROUTINGS_KEPT


def test_weights_changed_between_forwards_show_in_the_next_one():
    model = _model()
    inputs = archs.inputs("llama", batch=len(NAMES))
    with torch.no_grad():
        before = _out(model, inputs)
        for name in ("x", "z"):  # a LoRA factor and an (IA)^3 vector, in place (as an optimizer or a swap does)
            for p in model.adapterkit[name].parameters():
                p.mul_(1.5).add_(0.01)
        after = _out(model, inputs)
        assert (after - before).abs().max() > 1e-3
        torch.testing.assert_close(after, _alone(model, inputs), atol=1e-5, rtol=0)


def test_routed_training_steps_take_the_previous_step_into_account():
    """Two optimizer steps on routed rows: each step's forward sees the weights the previous step left."""
    model = _model()
    model.train_adapter(["x", "y", "z"])
    model.eval()  # no dropout: the routed and the one-by-one forwards must agree
    inputs = archs.inputs("llama", batch=len(NAMES))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        out = _out(model, inputs)
        torch.testing.assert_close(out.detach(), _alone(model, inputs).detach(), atol=1e-5, rtol=0)
        out.pow(2).mean().backward()
        assert all(model.adapterkit[n].parameters().__next__().grad is not None for n in ("x", "y", "z"))
        optimizer.step()
