"""Prefix tuning, Compacter, ConfigUnion (MAM / UniPELT) and gating on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification, RobertaForSequenceClassification

import adapterkit
from adapterkit import AdapterConfigError, AdapterError, ConfigUnion, LoRAConfig, PrefixTuningConfig, SeqBnConfig

from conftest import tiny_config, tiny_model


def run(model, **batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def randomize(module, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# Gated methods average their gate over all positions, padding included (the anchors' semantics, kept for
# exactness), so only ungated prefix configs are padding-invariant.
PREFIX_CONFIGS = ["prefix_tuning[prefix_length=4,bottleneck_size=16]", "prefix_tuning_flat[prefix_length=3]", "mam"]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("config", PREFIX_CONFIGS)
@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_padded_rows_equal_rows_alone(arch, config, attn, batch):
    model = adapterkit.init(tiny_model(arch, attn_implementation=attn))
    model.add_adapter("a", config=config, set_active=True)
    randomize(model.adapterkit["a"])
    out = run(model, **batch)
    for row in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][row].sum())
        alone = run(model, input_ids=batch["input_ids"][row:row + 1, :n])
        torch.testing.assert_close(out[row:row + 1, :n], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_eager_and_sdpa_agree_with_prefix(arch, batch):
    outs = []
    for attn in ("eager", "sdpa"):
        model = adapterkit.init(tiny_model(arch, attn_implementation=attn))
        model.add_adapter("a", config="prefix_tuning[prefix_length=4,bottleneck_size=16]", set_active=True)
        randomize(model.adapterkit["a"])
        outs.append(run(model, **batch))
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(outs[0][mask], outs[1][mask], atol=1e-5, rtol=0)


def test_prefix_changes_output_and_switches_attention_back(batch):
    model = adapterkit.init(tiny_model())
    base = run(model, **batch)
    impl = model.config._attn_implementation
    model.add_adapter("a", config="prefix_tuning[prefix_length=4]")
    assert model.config._attn_implementation == "adapterkit_" + impl
    assert torch.equal(run(model, **batch), base)  # not active yet
    model.set_active_adapters("a")
    assert (run(model, **batch) - base).abs().max() > 1e-4
    model.delete_adapter("a")
    assert model.config._attn_implementation == impl
    assert torch.equal(run(model, **batch), base)


@pytest.mark.parametrize("config", ["prefix_tuning[prefix_length=5,bottleneck_size=16]", "mam"])
def test_eject_keeps_outputs(config, batch):
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config=config, set_active=True)
    randomize(model.adapterkit["a"])
    before = run(model, **batch)
    n_before = model.adapter_summary(as_dict=True)[0]["#param"]
    model.eject_prefix_tuning("a")
    torch.testing.assert_close(run(model, **batch), before, atol=1e-6, rtol=0)
    assert model.adapter_summary(as_dict=True)[0]["#param"] < n_before
    members = model.adapters_config["a"]
    prefix_cfg = next(c for c in (members if isinstance(members, ConfigUnion) else [members])
                      if isinstance(c, PrefixTuningConfig))
    assert prefix_cfg.flat is True


def test_eject_needs_prefix():
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config="lora")
    with pytest.raises(AdapterError, match="no prefix tuning"):
        model.eject_prefix_tuning("a")


@pytest.mark.parametrize("config", ["compacter[reduction_factor=4]", "compacter++[reduction_factor=4]"])
def test_compacter_shares_one_rule(config, batch):
    model = adapterkit.init(tiny_model())
    model.add_adapter("a", config=config, set_active=True)
    names = [n for n, _ in model.adapterkit["a"].named_parameters()]
    assert [n for n in names if "phm_rule" in n] == ["shared.phm.phm_rule"]
    base = run(model, **batch)
    with torch.no_grad():
        model.adapterkit["a"].shared["phm"].phm_rule.mul_(100)
    assert not torch.equal(run(model, **batch), base)  # the shared rule is used by every layer


def test_phm_weight_is_sum_of_kronecker_products():
    from adapterkit.methods.bottleneck.phm import PHMLinear
    cfg = adapterkit.CompacterConfig(shared_phm_rule=False, phm_dim=2)
    layer = PHMLinear(4, 6, "down", cfg, None)
    randomize(layer)
    w = torch.bmm(layer.W_left, layer.W_right)
    expected = sum(torch.kron(layer.phm_rule[i], w[i]) for i in range(2))
    torch.testing.assert_close(layer.weight, expected)
    x = torch.randn(3, 4)
    torch.testing.assert_close(layer(x), x @ expected + layer.b)


def test_phm_dimension_error():
    model = adapterkit.init(tiny_model())
    with pytest.raises(AdapterConfigError, match="divisible by phm_dim"):
        model.add_adapter("a", config="compacter[phm_dim=5]")
    assert model.adapters_config == {}


# -- gating -------------------------------------------------------------------------------------------------
def test_gating_scores_shape_and_values(batch):
    model = adapterkit.init(tiny_model())
    model.add_adapter("u", config="unipelt", set_active=True)
    out = model(**batch, output_adapter_gating_scores=True)
    scores = out.adapter_gating_scores
    assert set(scores) == {"u"} and set(scores["u"]) == {0, 1}
    assert set(scores["u"][0]) == {"prefix", "output_adapter", "attn_q", "attn_v"}
    for layer in scores["u"].values():
        for value in layer.values():
            assert isinstance(value, np.ndarray) and value.shape == (3, 1)
            assert ((value > 0) & (value < 1)).all()
    assert not hasattr(model(**batch), "adapter_gating_scores") or model(**batch).get("adapter_gating_scores") is None


def test_gating_scores_on_task_head_model(batch):
    model = adapterkit.init(RobertaForSequenceClassification(tiny_config("roberta", num_labels=2)).eval())
    model.add_adapter("u", config="unipelt", set_active=True)
    out = model(**batch, output_adapter_gating_scores=True)
    assert out.logits.shape == (3, 2) and set(out.adapter_gating_scores["u"][1]) >= {"prefix", "attn_q"}
    tup = model(**batch, output_adapter_gating_scores=True, return_dict=False)
    assert isinstance(tup[-1], dict) and "u" in tup[-1]


def test_bottleneck_gate_scales_output(batch):
    model = adapterkit.init(tiny_model())
    model.add_adapter("g", config=SeqBnConfig(use_gating=True), set_active=True)
    randomize(model.adapterkit["g"])
    gated = run(model, **batch)
    with torch.no_grad():  # a gate saturated at 1 gives the ungated adapter
        for layer in model.adapterkit["g"].layers.values():
            layer["output_adapter"].gate.bias.fill_(50.0)
    open_gate = run(model, **batch)
    for layer in model.adapterkit["g"].layers.values():
        layer["output_adapter"].gate = None
    torch.testing.assert_close(run(model, **batch), open_gate, atol=1e-6, rtol=0)
    assert not torch.equal(gated, open_gate)


def test_gated_lora_replaces_scaling_and_cannot_merge(batch):
    model = adapterkit.init(tiny_model())
    model.add_adapter("l", config=LoRAConfig(use_gating=True, alpha=32), set_active=True)
    randomize(model.adapterkit["l"])
    with torch.no_grad():
        for layer in model.adapterkit["l"].layers.values():
            for m in layer.values():
                m.gate.bias.fill_(50.0)
    gated = run(model, **batch)
    ungated = adapterkit.init(tiny_model())
    ungated.add_adapter("l", config=LoRAConfig(alpha=8), set_active=True)  # alpha / r = 1
    sd = {k: v for k, v in model.adapterkit["l"].state_dict().items() if ".gate." not in k}
    ungated.adapterkit["l"].load_state_dict(sd)
    torch.testing.assert_close(run(ungated, **batch), gated, atol=1e-5, rtol=0)
    with pytest.raises(AdapterError, match="gated"):
        model.merge_adapter("l")


def test_prefix_gate_scales_prefix_not_model_keys(batch):
    """A closed gate (0) removes the prefix's contribution entirely: the anchors' 3.1 bug gated the model's keys."""
    model = adapterkit.init(tiny_model())
    base = run(model, **batch)
    model.add_adapter("p", config="prefix_tuning[prefix_length=4,use_gating=True]", set_active=True)
    randomize(model.adapterkit["p"])
    with torch.no_grad():
        for layer in model.adapterkit["p"].layers.values():
            layer["prefix_gate"].bias.fill_(-60.0)
            layer["prefix_gate"].weight.zero_()
    closed = run(model, **batch)
    # zero keys and values: the prefix positions get weight exp(0)/Z but contribute zero values; outputs differ
    # from base only through the softmax normaliser, never through gating the model's own keys/values
    assert (closed - base).abs().max() > 0
    with torch.no_grad():
        for layer in model.adapterkit["p"].layers.values():
            layer["prefix_gate"].bias.fill_(60.0)
    model_open = run(model, **batch)
    assert not torch.equal(model_open, closed)


# -- ConfigUnion --------------------------------------------------------------------------------------------
def test_union_validation():
    with pytest.raises(AdapterConfigError, match="no nesting"):
        ConfigUnion(ConfigUnion(LoRAConfig()), SeqBnConfig())
    with pytest.raises(AdapterConfigError, match="two lora configs"):
        ConfigUnion(LoRAConfig(), LoRAConfig(r=4))
    with pytest.raises(AdapterConfigError, match="different locations"):
        ConfigUnion(SeqBnConfig(), SeqBnConfig(reduction_factor=2))
    ok = ConfigUnion(SeqBnConfig(mh_adapter=True, output_adapter=False), SeqBnConfig(mh_adapter=False))
    assert adapterkit.AdapterConfig.from_dict(ok.to_dict()) == ok


def test_union_string_and_round_trip():
    cfg = adapterkit.resolve_config("prefix_tuning[prefix_length=7]|parallel")
    assert isinstance(cfg, ConfigUnion) and cfg[0].prefix_length == 7 and cfg[1].is_parallel
    assert adapterkit.AdapterConfig.from_dict(cfg.to_dict()) == cfg
    uni = adapterkit.resolve_config("unipelt")
    assert all(c.use_gating for c in uni) and uni[0].prefix_length == 10


def test_train_union_adapter_grads(batch):
    model = adapterkit.init(BertForSequenceClassification(tiny_config(num_labels=2)))
    model.add_adapter("u", config="unipelt")
    model.train_adapter("u")
    out = model(**batch, labels=torch.tensor([0, 1, 0]))
    out.loss.backward()
    grads = {n: p.grad for n, p in model.adapterkit["u"].named_parameters()}
    assert grads and all(g is not None for g in grads.values())
    assert all(p.grad is None for n, p in model.bert.named_parameters())


def test_prefix_sites_keep_no_activation_after_a_forward():
    """Gated prefixes read the attention input; the site lets it go once the attention ran (else it would pin one
    activation per layer, and the graph behind it, until the next forward)."""
    from adapterkit.sites import AttentionSite as PrefixSite
    model = adapterkit.init(tiny_model())
    model.add_adapter("g", config="prefix_tuning[use_gating=True]", set_active=True)
    model(input_ids=torch.randint(0, 99, (2, 7))).last_hidden_state.sum().backward()
    sites = [s for s in model.adapter_state.sites.values() if isinstance(s, PrefixSite)]
    assert sites and all(s._input is None for s in sites)
