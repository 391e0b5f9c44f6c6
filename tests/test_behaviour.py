"""Identity inits, merge / reset, train_adapter, AdapterSetup, deletion and clear errors on tiny models."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification, RobertaForMaskedLM

import adapterkit
from adapterkit import AdapterError, Fuse, LoRAConfig, Stack

from conftest import tiny_config, tiny_model

ARCHS = ["bert", "roberta"]


def forward(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def randomize(module, seed=0, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config", ["lora", "ia3", "parallel", "scaled_parallel",
                                    "lora[attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]"])
def test_identity_methods_leave_outputs_unchanged(arch, config, batch):
    model = adapterkit.init(tiny_model(arch))
    before = forward(model, batch)
    model.add_adapter("a", config=config, set_active=True)
    assert (forward(model, batch) - before).abs().max() == 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config", ["pfeiffer", "houlsby", "pfeiffer+inv"])
def test_bottleneck_changes_outputs_only_when_active(arch, config, batch):
    model = adapterkit.init(tiny_model(arch))
    before = forward(model, batch)
    model.add_adapter("a", config=config)
    assert torch.equal(forward(model, batch), before)  # added, not active
    model.set_active_adapters("a")
    assert not torch.equal(forward(model, batch), before)
    model.set_active_adapters(None)
    assert torch.equal(forward(model, batch), before)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config", ["lora", "ia3", "lora[r=4,alpha=16,intermediate_lora=True,output_lora=True]",
                                    "ia3[attn_matrices=['q','k','v'],output_lora=True]"])
def test_merge_equals_unmerged_and_reset_restores(arch, config, batch):
    model = adapterkit.init(tiny_model(arch))
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}
    base = forward(model, batch)
    model.add_adapter("a", config=config, set_active=True)
    randomize(model.adapterkit["a"], scale=0.3)
    unmerged = forward(model, batch)
    assert (unmerged - base).abs().max() > 1e-3
    model.merge_adapter("a")
    changed = [k for k, v in model.state_dict().items() if k in weights and not torch.equal(v, weights[k])]
    assert changed  # the update went into the weights
    torch.testing.assert_close(forward(model, batch), unmerged, atol=1e-5, rtol=0)
    # merged adapters are not applied twice, even if deactivated and reactivated
    model.set_active_adapters(None)
    torch.testing.assert_close(forward(model, batch), unmerged, atol=1e-5, rtol=0)
    model.set_active_adapters("a")
    model.reset_adapter("a")
    now = model.state_dict()
    assert max((now[k] - v).abs().max().item() for k, v in weights.items()) <= 1e-6
    torch.testing.assert_close(forward(model, batch), unmerged, atol=1e-5, rtol=0)  # runs unmerged again
    model.set_active_adapters(None)
    torch.testing.assert_close(forward(model, batch), base, atol=1e-6, rtol=0)


def test_merge_hooks_cost_nothing_when_merged(batch):
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config="lora", set_active=True)
    model.merge_adapter("a")
    assert model.adapter_state.active_at((0, "attn_q")) == ()


def test_double_merge_on_same_weight_is_refused():
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config="lora")
    model.add_adapter("b", config="lora")
    model.merge_adapter("a")
    with pytest.raises(AdapterError, match="already merged"):
        model.merge_adapter("b")


@pytest.mark.parametrize("config", ["pfeiffer", "lora", "ia3", "houlsby+inv", "parallel"])
def test_train_adapter_grads_exactly_adapter(config, batch):
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config=config)
    model.add_adapter("other", config="lora")
    model.train_adapter("a")
    assert model.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"adapterkit.a.{n}" for n, _ in model.adapterkit["a"].named_parameters()}
    assert trainable == expected and expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    out = model(**batch).last_hidden_state
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * target).sum().backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= expected
    # LoRA's B and the parallel adapter's up projection start at zero, so the matrices before them get no
    # gradient on the first step; everything else must move
    if config not in ("lora", "parallel"):
        assert changed == expected


def test_train_adapter_keeps_task_head_trainable(batch):
    model = adapterkit.init(BertForSequenceClassification(tiny_config(num_labels=3)))
    model.add_adapter("a", config="pfeiffer")
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if not n.startswith("adapterkit.")} == {"classifier.weight", "classifier.bias"}
    assert not any(n.startswith("bert.") for n in trainable)
    out = model(**batch, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert model.adapterkit["a"].layers["0"]["output_adapter"].down.weight.grad is not None


def test_invertible_adapter_inverts_before_lm_head(batch):
    model = adapterkit.init(RobertaForMaskedLM(tiny_config("roberta")).eval())
    model.add_adapter("a", config="pfeiffer+inv", set_active=True)
    inv = model.adapterkit["a"].shared["invertible"]
    randomize(inv, scale=0.5)
    captured = {}
    model.lm_head.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    x = torch.randn(2, 5, 32)
    assert torch.allclose(inv(inv(x), rev=True), x, atol=1e-6)
    with torch.no_grad():
        model(**batch)
    assert captured["x"].shape[-1] == 32


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_setup_context(arch, batch):
    model = adapterkit.init(tiny_model(arch))
    model.add_adapter("a", config="pfeiffer")
    model.add_adapter("b", config="houlsby")
    base = forward(model, batch)
    model.set_active_adapters("a")
    with_a = forward(model, batch)
    with adapterkit.AdapterSetup("b"):
        with_b = forward(model, batch)
        with adapterkit.AdapterSetup(None):
            assert torch.equal(forward(model, batch), base)
    model.set_active_adapters("b")
    assert torch.equal(forward(model, batch), with_b)
    with adapterkit.AdapterSetup("a"):
        assert torch.equal(forward(model, batch), with_a)
    assert not torch.equal(with_a, with_b)


def test_stack_of_lora_adds_both(batch):
    model = adapterkit.init(tiny_model())
    base = forward(model, batch)
    for name in ("a", "b"):
        model.add_adapter(name, config="lora")
        randomize(model.adapterkit[name], seed=len(name) + ord(name))
    deltas = {}
    for name in ("a", "b"):
        model.set_active_adapters(name)
        deltas[name] = model.adapterkit[name].layers["0"]["attn_q"]
    model.set_active_adapters(["a", "b"])
    assert model.active_adapters == Stack("a", "b")
    assert not torch.equal(forward(model, batch), base)


def test_delete_adapter_restores_model(batch):
    model = adapterkit.init(tiny_model())
    base = forward(model, batch)
    keys = set(model.state_dict())
    model.add_adapter("a", config="houlsby+inv", set_active=True)
    model.add_adapter("b", config="lora", set_active=True)
    model.merge_adapter("b")
    model.delete_adapter("a")
    model.delete_adapter("b")
    assert model.active_adapters is None and model.adapters_config == {}
    assert set(model.state_dict()) == keys
    assert not model.adapter_state.sites
    assert torch.equal(forward(model, batch), base)
    assert type(model.encoder.layer[0].output).forward is not None
    assert "forward" not in model.encoder.layer[0].output.__dict__


def test_overwrite_ok():
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config="lora")
    model.add_adapter("a", config="pfeiffer", overwrite_ok=True)
    assert model.adapters_config["a"].architecture == "bottleneck"


def test_init_is_idempotent_and_keeps_class_name():
    model = tiny_model()
    assert adapterkit.init(model) is adapterkit.init(model)
    assert type(model).__name__ == "BertModel"


# -- clear errors --------------------------------------------------------------------------------------
def test_duplicate_name():
    model = adapterkit.init(tiny_model())
    model.add_adapter("a")
    with pytest.raises(AdapterError, match="already exists"):
        model.add_adapter("a", config="lora")


def test_merging_bottleneck_is_refused():
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config="pfeiffer")
    with pytest.raises(AdapterError, match="bottleneck adapter and cannot be merged.*LoRA and \\(IA\\)\\^3"):
        model.merge_adapter("a")


def test_activating_missing_adapter():
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config="lora")
    with pytest.raises(AdapterError, match="'nope'.*added adapters: 'a'"):
        model.set_active_adapters("nope")
    with pytest.raises(AdapterError, match="'nope'"):
        model.train_adapter(["a", "nope"])
    with pytest.raises(AdapterError, match="'nope'"):
        model.merge_adapter("nope")
    assert model.active_adapters is None


def test_unknown_config_name_on_add():
    model = adapterkit.init(tiny_model())
    with pytest.raises(adapterkit.AdapterConfigError, match="valid names: .*pfeiffer"):
        model.add_adapter("a", config="nonsense")
    assert model.adapters_config == {}


def test_unsupported_block_is_refused_clearly():
    model = adapterkit.init(tiny_model())
    model.add_adapter("a")
    model.add_adapter("b", config="lora")
    model.add_adapter("c")
    with pytest.raises(AdapterError, match="no AdapterFusion named 'a,c'"):
        model.set_active_adapters(Fuse("a", "c"))
    with pytest.raises(AdapterError, match="Fuse is not supported for LoRA / \\(IA\\)\\^3 / VeRA adapter 'b'"):
        model.set_active_adapters(Fuse("a", "b"))


def test_bad_adapter_name():
    model = adapterkit.init(tiny_model())
    with pytest.raises(AdapterError, match="invalid adapter name"):
        model.add_adapter("a.b", config=LoRAConfig())


def test_unknown_architecture():
    import torch.nn as nn
    with pytest.raises(AdapterError, match="no config.model_type"):
        adapterkit.init(nn.Linear(2, 2))


def test_merged_projection_runs_without_hook(batch):
    model = adapterkit.init(tiny_model())
    query = model.encoder.layer[0].attention.self.query
    hooks = len(query._forward_hooks)

    def wrapped():  # a whole projection's site takes over its forward (an instance attribute) instead of a hook
        assert len(query._forward_hooks) == hooks
        return "forward" in query.__dict__

    model.add_adapter("a", config="lora", set_active=True)
    assert wrapped()
    randomize(model.adapterkit["a"], scale=0.3)
    unmerged = forward(model, batch)
    model.merge_adapter("a")
    assert not wrapped()  # merged: the plain forward path
    torch.testing.assert_close(forward(model, batch), unmerged, atol=1e-5, rtol=0)
    model.add_adapter("b", config="lora")  # a new unmerged adapter at the same projection brings the wrapper back
    assert wrapped()
    model.delete_adapter("b")
    model.reset_adapter("a")
    assert wrapped()
    torch.testing.assert_close(forward(model, batch), unmerged, atol=1e-5, rtol=0)
