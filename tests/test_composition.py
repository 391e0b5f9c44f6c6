"""Composition blocks on tiny models: Average against its formula, row-exactness of BatchSplit / Parallel /
per-example routing (each row gets what it gets alone), nesting and support errors."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification

import adapterkit
from adapterkit import AdapterError, AdapterSetup, Average, BatchSplit, Fuse, Parallel, Split, Stack
from adapterkit.compose import projection as compose_lora

from conftest import tiny_config, tiny_model

BN = {"a": "pfeiffer", "h": "houlsby", "par": "parallel", "inv": "pfeiffer+inv"}
LORA = {"l4": "lora[r=4,alpha=8]", "l8": "lora[r=8,alpha=16,attn_matrices=['q','k','v']]", "i3": "ia3"}
PREFIX = {"p3": "prefix_tuning[prefix_length=3,bottleneck_size=16]", "p5": "prefix_tuning_flat[prefix_length=5]"}


def randomize(module, seed, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def model_with(arch="bert", configs=None, seed=0):
    model = adapterkit.init(tiny_model(arch, seed=seed))
    for i, (name, config) in enumerate((configs or {}).items()):
        model.add_adapter(name, config=config)
        randomize(model.adapterkit[name], seed=100 + i)
    return model


def batch(rows=4, seq=9, seed=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 99, (rows, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    mask[-1, -5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def run(model, inputs, setup="unchanged", **kwargs):
    with torch.no_grad():
        if setup == "unchanged":
            return model(**inputs, **kwargs).last_hidden_state
        with AdapterSetup(setup):
            return model(**inputs, **kwargs).last_hidden_state


def alone(model, inputs, setup, row):
    """Row `row` run on its own (batch of one) with `setup`."""
    return run(model, {k: v[row:row + 1] for k, v in inputs.items()}, setup)[0]


# -- Average: sum_i w_i * output_i, not divided by N again ----------------------------------------------------
def test_average_of_bottlenecks_is_the_weighted_sum_of_outputs():
    """Pfeiffer outputs are `residual + U relu(D z)`: with weights summing to 1, the average is one adapter whose
    down projection stacks both and whose up projection is the weighted concatenation."""
    model = model_with(configs={"a": "pfeiffer", "b": "pfeiffer"})
    model.add_adapter("ab", config="pfeiffer[reduction_factor=8]")  # width 4 = 2 + 2
    w = [0.2, 0.8]
    with torch.no_grad():
        for layer in ("0", "1"):
            a, b = (model.adapterkit[n].layers[layer]["output_adapter"] for n in "ab")
            ab = model.adapterkit["ab"].layers[layer]["output_adapter"]
            ab.down.weight.copy_(torch.cat([a.down.weight, b.down.weight]))
            ab.down.bias.copy_(torch.cat([a.down.bias, b.down.bias]))
            ab.up.weight.copy_(torch.cat([w[0] * a.up.weight, w[1] * b.up.weight], dim=1))
            ab.up.bias.copy_(w[0] * a.up.bias + w[1] * b.up.bias)
    inputs = batch()
    averaged = run(model, inputs, Average("a", "b", weights=[1, 4]))
    torch.testing.assert_close(averaged, run(model, inputs, "ab"), atol=1e-6, rtol=0)
    assert (averaged - run(model, inputs, "a")).abs().max() > 1e-2


@pytest.mark.parametrize("normalize", [True, False])
def test_average_of_loras_adds_weighted_updates(normalize):
    """`out + sum_i w_i delta_i` equals one LoRA with stacked A and weighted B."""
    model = model_with(configs={"l1": "lora[r=4,alpha=8]", "l2": "lora[r=4,alpha=4]"})
    model.add_adapter("l12", config="lora[r=8,alpha=8]")  # scaling 1
    weights = [1.0, 3.0]
    w = [x / sum(weights) for x in weights] if normalize else weights
    with torch.no_grad():
        for (layer, loc), module in model.adapter_state.layer_modules("l12"):
            m1 = model.adapter_state.module_at("l1", (layer, loc))
            m2 = model.adapter_state.module_at("l2", (layer, loc))
            module.lora_A.copy_(torch.cat([m1.lora_A, m2.lora_A]))
            module.lora_B.copy_(torch.cat([w[0] * m1.scaling * m1.lora_B, w[1] * m2.scaling * m2.lora_B], dim=1))
    inputs = batch()
    averaged = run(model, inputs, Average("l1", "l2", weights=weights, normalize_weights=normalize))
    torch.testing.assert_close(averaged, run(model, inputs, "l12"), atol=1e-6, rtol=0)


def test_average_of_ia3_scales_by_weighted_vectors():
    model = model_with(configs={"i1": "ia3", "i2": "ia3"})
    model.add_adapter("i12", config="ia3")
    with torch.no_grad():
        for key, module in model.adapter_state.layer_modules("i12"):
            module.ia3_l.copy_(0.25 * model.adapter_state.module_at("i1", key).ia3_l
                               + 0.75 * model.adapter_state.module_at("i2", key).ia3_l)
    inputs = batch()
    torch.testing.assert_close(run(model, inputs, Average("i1", "i2", weights=[1, 3])), run(model, inputs, "i12"),
                               atol=1e-6, rtol=0)


def test_average_of_one_adapter_is_that_adapter():
    model = model_with(configs={**BN, **LORA})
    inputs = batch()
    for name in ("a", "h", "par", "l8", "i3"):
        torch.testing.assert_close(run(model, inputs, Average(name)), run(model, inputs, name), atol=1e-6, rtol=0)


# -- BatchSplit / Parallel / routing: every row gets what it gets alone ---------------------------------------
ROW_CASES = [
    ("bottleneck", BN, BatchSplit("a", "h", "par", "inv", batch_sizes=1)),
    ("lora", LORA, BatchSplit("l4", "l8", "i3", Stack("l4", "i3"), batch_sizes=1)),
    ("prefix", PREFIX, BatchSplit("p3", "p5", Stack("p3", "p5"), "p5", batch_sizes=1)),
    ("mixed", {**BN, **LORA, **PREFIX}, BatchSplit(Stack("p3", "a"), "l8", Stack("i3", "h"), "p5", batch_sizes=1)),
]


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("kind,configs,setup", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_batch_split_rows_equal_their_adapter_alone(arch, kind, configs, setup):
    model = model_with(arch, configs)
    inputs = batch()
    out = run(model, inputs, setup)
    for row, child in enumerate(setup.children):
        torch.testing.assert_close(out[row], alone(model, inputs, child, row), atol=1e-6, rtol=0)
        torch.testing.assert_close(out[row], run(model, inputs, child)[row], atol=1e-6, rtol=0)
    assert (out - run(model, inputs, None)).abs().max() > 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prefix_rows_of_different_lengths_without_an_attention_mask(attn):
    """No mask from the caller: the shorter prefix's padding must still be masked out."""
    model = adapterkit.init(tiny_model(attn_implementation=attn))
    for i, (name, config) in enumerate(PREFIX.items()):
        model.add_adapter(name, config=config)
        randomize(model.adapterkit[name], i)
    inputs = {"input_ids": batch(rows=3)["input_ids"]}
    setup = BatchSplit("p3", "p5", "p3", batch_sizes=1)
    for out, names in ((run(model, inputs, setup), setup.children),
                       (run(model, inputs, adapter_names=["p5", None, "p3"]), ["p5", None, "p3"])):
        for row, name in enumerate(names):
            torch.testing.assert_close(out[row], alone(model, inputs, name, row), atol=1e-6, rtol=0)


def test_batch_split_inside_a_stack_and_absent_children():
    """Stack(c, BatchSplit(a, l)): rows of the LoRA child get c alone at the bottleneck sites, and vice versa."""
    model = model_with(configs={"c": "pfeiffer", "a": "houlsby", "l": "lora"})
    inputs = batch()
    out = run(model, inputs, Stack("c", BatchSplit("a", "l", batch_sizes=[3, 1])))
    torch.testing.assert_close(out[:3], run(model, inputs, Stack("c", "a"))[:3], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[3], run(model, inputs, Stack("c", "l"))[3], atol=1e-6, rtol=0)


def test_batch_split_sizes_must_fit():
    model = model_with(configs={"a": "pfeiffer", "b": "pfeiffer"})
    with pytest.raises(AdapterError, match=r"BatchSplit\(batch_sizes=\[1, 1\]\) needs a batch of 2 rows, got 4"):
        run(model, batch(), BatchSplit("a", "b", batch_sizes=[1, 1]))


@pytest.mark.parametrize("configs", [BN, LORA, PREFIX, {"u": "mam", "l4": LORA["l4"]}], ids=["bn", "lora", "prefix",
                                                                                            "union"])
def test_parallel_returns_one_output_per_branch_in_order(configs):
    model = model_with(configs=configs)
    names = list(configs)
    inputs = batch(rows=3)
    model.set_active_adapters(Parallel(*names))
    out = run(model, inputs)
    assert out.shape[0] == 3 * len(names)
    for i, name in enumerate(names):
        torch.testing.assert_close(out[3 * i:3 * (i + 1)], run(model, inputs, name), atol=1e-6, rtol=0)


def test_parallel_in_a_stack_and_with_a_task_head():
    model = adapterkit.init(BertForSequenceClassification(tiny_config(num_labels=3)).eval())
    for i, name in enumerate(["c", "a", "b"]):
        model.add_adapter(name, config="pfeiffer")
        randomize(model.adapterkit[name], 10 + i)
    inputs = batch(rows=2)
    labels = torch.tensor([0, 2])
    model.set_active_adapters(Stack("c", Parallel("a", "b")))
    with torch.no_grad():
        out = model(**inputs, labels=labels)
        with AdapterSetup(Stack("c", "b")):
            second = model(**inputs).logits
    assert out.logits.shape == (4, 3) and out.loss.ndim == 0  # labels were replicated with the inputs
    torch.testing.assert_close(out.logits[2:], second, atol=1e-6, rtol=0)


def test_train_parallel_updates_both_branches():
    model = model_with(configs={"a": "pfeiffer", "l": "lora[init_weights=bert]"})
    model.train_adapter(Parallel("a", "l"))
    out = model(**batch(rows=2)).last_hidden_state
    assert out.shape[0] == 4
    out.pow(2).mean().backward()
    for name in ("a", "l"):
        grads = [p.grad for p in model.adapterkit[name].parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_split_runs_the_sequence_parts_through_different_adapters():
    model = model_with(configs={"a": "pfeiffer", "b": "pfeiffer"})
    inputs = batch(seq=9)
    out = run(model, inputs, Split("a", "b", splits=[4, 5]))
    assert out.shape == (4, 9, 32)
    assert not torch.allclose(out, run(model, inputs, "a")) and not torch.allclose(out, run(model, inputs, "b"))
    with pytest.raises(AdapterError, match=r"Split\(splits=\[4, 4\]\) needs sequences of 8 positions, got 9"):
        run(model, inputs, Split("a", "b", splits=[4, 4]))


# -- per-example routing --------------------------------------------------------------------------------------
def test_routing_mixed_loras_is_vectorised_and_row_exact(monkeypatch):
    configs = {f"l{i}": f"lora[r={4 + 2 * (i % 3)},alpha={8 + i}]" for i in range(6)}
    configs["i"] = "ia3"
    model = model_with(configs=configs)
    names = ["l0", "l1", None, "l2", "i", "l3", "l4", "l5", "l0"]
    inputs = batch(rows=len(names))
    calls = []
    original = compose_lora._vectorised
    monkeypatch.setattr(compose_lora, "_vectorised", lambda *a: calls.append(1) or original(*a))
    out = run(model, inputs, adapter_names=names)
    assert len(calls) == 2 * 4  # q, k, v, FFN intermediate of both layers: one pass each
    for row, name in enumerate(names):
        torch.testing.assert_close(out[row], alone(model, inputs, name, row), atol=1e-6, rtol=0)


def test_routing_any_setup_per_row():
    model = model_with(configs={**BN, **LORA, **PREFIX, "b": "pfeiffer"})
    model.add_adapter_fusion(Fuse("a", "b"))
    randomize(model.adapterkit_fusion, 3, 0.1)
    names = ["a", "p5", None, "l8", Fuse("a", "b"), Stack("p3", "l4"), "inv", "a"]
    inputs = batch(rows=len(names))
    out = run(model, inputs, adapter_names=names)
    for row, name in enumerate(names):
        torch.testing.assert_close(out[row], alone(model, inputs, name, row), atol=1e-6, rtol=0)
    # the active setup is not used for routed calls, and comes back afterwards
    model.set_active_adapters("h")
    torch.testing.assert_close(run(model, inputs, adapter_names=names), out, atol=0, rtol=0)
    torch.testing.assert_close(run(model, inputs), run(model, inputs, "h"), atol=0, rtol=0)


def test_routing_one_setup_for_all_rows_is_that_setup():
    model = model_with(configs=LORA)
    inputs = batch()
    torch.testing.assert_close(run(model, inputs, adapter_names=["l4"] * 4), run(model, inputs, "l4"), atol=0, rtol=0)


def test_routing_errors():
    model = model_with(configs={"a": "pfeiffer", "b": "lora"})
    inputs = batch(rows=2)
    with pytest.raises(AdapterError, match="adapter_names has 1 entries for a batch of 2 rows"):
        run(model, inputs, adapter_names=["a"])
    with pytest.raises(AdapterError, match="'nope' do not exist"):
        run(model, inputs, adapter_names=["a", "nope"])
    with pytest.raises(AdapterError, match="Parallel changes the batch size"):
        run(model, inputs, adapter_names=[Parallel("a", "b"), None])
    with pytest.raises(AdapterError, match="one adapter name"):
        run(model, inputs, adapter_names="a")
    assert model.adapter_state.record.routing is None  # a failed call leaves no routing behind
    torch.testing.assert_close(run(model, inputs), run(model, inputs, None), atol=0, rtol=0)


# -- nesting rules and per-method support, checked when the setup is set --------------------------------------
@pytest.mark.parametrize("setup,message", [
    (Fuse("a", Parallel("b", "c")), "cannot nest Parallel .* inside Fuse; Fuse may contain: adapter names, Stack"),
    (Parallel("a", Parallel("b", "c")), "cannot nest Parallel"),
    (Stack("a", Stack("b", "c")), "cannot nest Stack"),
    (BatchSplit(Average("a", Split("b", "c", splits=2)), "c", batch_sizes=1), "too deep"),
    (Split("a", "l", splits=2), "Split is not supported for LoRA / \\(IA\\)\\^3 / VeRA adapter 'l'"),
    (Average("a", "p"), "Average is not supported for prefix-tuning adapter 'p'.* support: Stack, BatchSplit, "
                        "Parallel"),
    (Fuse("a", "l"), "Fuse is not supported for LoRA"),
    (Fuse("a", "b"), "no AdapterFusion named 'a,b'"),
])
def test_unsupported_setups_are_refused_when_set(setup, message):
    model = model_with(configs={"a": "pfeiffer", "b": "pfeiffer", "c": "pfeiffer", "l": "lora",
                                "p": "prefix_tuning[prefix_length=2]"})
    with pytest.raises(AdapterError, match=message):
        model.set_active_adapters(setup)
    with pytest.raises(AdapterError, match=message):
        model.train_adapter(setup)
    assert model.active_adapters is None


def test_blocks_compare_and_print_with_their_parameters():
    assert BatchSplit("a", "b", batch_sizes=[1, 2]) != BatchSplit("a", "b", batch_sizes=[2, 1])
    assert Average("a", "b", weights=[1, 3]) == Average("a", "b", weights=[2, 6])
    assert repr(Split("a", "b", splits=3)) == "Split('a', 'b', splits=[3, 3])"
    assert Fuse("a", "b").name == "a,b" and Fuse(Stack("x", "a"), "b").name == "a,b"
    assert Stack("c", Parallel("a", "b", "d")).parallel_channels == 3
    with pytest.raises(AdapterError, match="2 children but 3 weights"):
        Average("a", "b", weights=[1, 2, 3])
    with pytest.raises(AdapterError, match="batch_sizes=\\[1\\] must be one int >= 0 or one per child"):
        BatchSplit("a", "b", batch_sizes=[1])


def test_deleting_an_adapter_of_a_block_deactivates_it():
    model = model_with(configs={"a": "pfeiffer", "b": "pfeiffer", "c": "lora"})
    model.set_active_adapters(BatchSplit("a", "b", batch_sizes=2))
    model.delete_adapter("b")
    assert model.active_adapters is None
    model.set_active_adapters(Stack("a", "c"))
    model.delete_adapter("c")
    assert model.active_adapters == Stack("a")
