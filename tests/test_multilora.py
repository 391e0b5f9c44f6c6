"""Many LoRA adapters in one batch (compose/segmented.py): adapters of different ranks, 64 adapters, base rows, and
the cache of stacked factors (kept while unchanged, rebuilt after an in-place change, a reload or a new adapter of
the same name); each row equals that row run alone with its adapter, and routed training gets each adapter's own
gradient."""

from __future__ import annotations

import torch

import adapterkit
from adapterkit.compose import segmented

import archs

ALL = "attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True"


def _hidden(model, inputs, **kwargs):
    return model(**inputs, **kwargs).last_hidden_state


def _alone(model, inputs, row, name):
    one = {k: v[row:row + 1] for k, v in inputs.items()}
    with adapterkit.AdapterSetup(name):
        return _hidden(model, one)


def _check_rows(model, inputs, names, atol=1e-5):
    with torch.no_grad():
        out = _hidden(model, inputs, adapter_names=names)
        plain = _hidden(model, inputs)
        for row, name in enumerate(names):
            name = None if name == "__base__" else name
            torch.testing.assert_close(out[row:row + 1], _alone(model, inputs, row, name), atol=atol, rtol=1e-5)
            if name is not None:  # the row really got its adapter
                assert (out[row] - plain[row]).abs().max() > 1e-3, (row, name)
    return out


def test_adapters_of_different_ranks_share_one_batch():
    model = archs.randomised("llama", {"r1": f"lora[r=1,{ALL}]", "r4": f"lora[r=4,alpha=2,{ALL}]",
                                       "r16": f"lora[r=16,{ALL}]", "r8": "lora[r=8]"})
    inputs = archs.inputs("llama", batch=7)
    _check_rows(model, inputs, ["r16", "r1", None, "r4", "r16", "r8", "__base__"])


def test_64_adapters_in_one_batch():
    names = [f"a{i}" for i in range(64)]
    model = archs.randomised("llama", {name: f"lora[r={2 + i % 3 * 2}]" for i, name in enumerate(names)})
    per_row = names + ["a3", None, "a3", "a60"]  # shared adapters and a base row
    inputs = archs.inputs("llama", batch=len(per_row), seq=4)
    _check_rows(model, inputs, per_row)


def test_the_cache_follows_changes_to_the_adapters():
    model = archs.randomised("llama", {"x": "lora[r=4]", "y": "lora[r=2]"})
    inputs = archs.inputs("llama", batch=3)
    names = ["x", "y", "x"]
    with torch.inference_mode():
        first = _hidden(model, inputs, adapter_names=names)
    with torch.no_grad():  # stacks built under inference_mode are plain tensors: usable here
        again = _hidden(model, inputs, adapter_names=names)
        torch.testing.assert_close(again, first, atol=0, rtol=0)
        model.adapterkit["y"].layers["0"].attn_q.lora_B.mul_(3.0)  # in place (as an optimizer step or a load)
    changed = _check_rows(model, inputs, names)
    assert (changed[1] - first[1]).abs().max() > 1e-3
    torch.testing.assert_close(changed[0], first[0], atol=1e-6, rtol=0)
    state = {k: v.clone() for k, v in model.adapterkit["y"].state_dict().items()}
    model.delete_adapter("y")  # a new adapter under the same name: new modules, new cache entries
    model.add_adapter("y", config="lora[r=2]")
    model.adapterkit["y"].load_state_dict(state)
    torch.testing.assert_close(_check_rows(model, inputs, names), changed, atol=1e-6, rtol=0)


def test_stacks_are_built_once_while_nothing_changes(monkeypatch):
    model = archs.randomised("llama", {"x": "lora[r=4]", "y": "lora[r=2]"})
    inputs = archs.inputs("llama", batch=2)
    built = []
    real = segmented._stack
    monkeypatch.setattr(segmented, "_stack", lambda modules: built.append(1) or real(modules))
    with torch.no_grad():
        for _ in range(3):
            _hidden(model, inputs, adapter_names=["x", "y"])
    sites = 2 * model.config.num_hidden_layers  # q and v of every layer
    assert len(built) == sites


def test_routed_training_gives_each_adapter_its_own_gradient():
    model = archs.randomised("llama", {"x": "lora[r=4]", "y": "lora[r=8]"})
    model.train_adapter(["x", "y"])
    model.eval()  # (dropout off: the vectorised path)
    inputs = archs.inputs("llama", batch=3)
    names = ["x", "y", "x"]
    _hidden(model, inputs, adapter_names=names).pow(2).sum().backward()
    routed = {n: p.grad.clone() for n, p in model.adapterkit.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    for row, name in enumerate(names):
        _alone(model, inputs, row, name).pow(2).sum().backward()
    alone = {n: p.grad for n, p in model.adapterkit.named_parameters() if p.grad is not None}
    assert routed.keys() == alone.keys() and any(n.startswith("y.") for n in routed)
    for n in routed:
        torch.testing.assert_close(routed[n], alone[n], atol=1e-4, rtol=1e-4)


def test_generate_routes_its_rows_once_and_sees_changes_between_calls(monkeypatch):
    """Inside one generate() every step reuses the first step's routing and stacks (no per-token bookkeeping); the
    next generate() starts afresh, so a change to an adapter between two calls is seen."""
    from transformers import LlamaForCausalLM

    from adapterkit.compose import routing

    model = archs.randomised("llama", {"x": "lora[r=4]", "y": "lora[r=2]"}, cls=LlamaForCausalLM)
    model.generation_config.update(eos_token_id=None, pad_token_id=0)
    ids = archs.inputs("llama", batch=3)["input_ids"]
    names = ["x", "y", None]
    made, built = [], []
    real_routing, real_stack = routing.Routing.__init__, segmented._stack
    monkeypatch.setattr(routing.Routing, "__init__", lambda self, *a: made.append(1) or real_routing(self, *a))
    monkeypatch.setattr(segmented, "_stack", lambda modules: built.append(1) or real_stack(modules))

    def generate():
        return model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, adapter_names=names)

    first = generate()
    assert len(made) == 2  # the argument check, then the first step's routing (5 steps)
    assert len(built) == 2 * model.config.num_hidden_layers  # q and v of each layer, once
    for row, name in enumerate(names):  # each row as generated alone with its adapter
        with adapterkit.AdapterSetup(name):
            alone = model.generate(input_ids=ids[row:row + 1], max_new_tokens=5, do_sample=False)
        assert torch.equal(first[row:row + 1], alone), row
    with torch.no_grad():
        for layer in model.adapterkit["y"].layers.values():
            layer.attn_q.lora_B.mul_(-20.0)
    changed = generate()
    with adapterkit.AdapterSetup("y"):
        alone = model.generate(input_ids=ids[1:2], max_new_tokens=5, do_sample=False)
    assert torch.equal(changed[1:2], alone) and not torch.equal(changed[1], first[1])
    assert torch.equal(changed[0], first[0])
