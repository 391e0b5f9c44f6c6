"""DoRA ("dora", `DoRAConfig`; `dora_semantics` "adapters" or "peft"): equal to the `adapters` package's outputs on
its fixtures (tools/make_dora_fixtures.py) and to peft's both ways; beyond both, on GPT-2's fused c_attn and
grouped-query Llama it trains, merges and resets; the cached norm follows every change of the weights."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import peft  # a test dependency: these checks must run, never skip
import pytest
import torch
from safetensors.torch import load_file

import adapterkit
from adapterkit import AdapterConfigError, AdapterError, Average, BatchSplit, DoRAConfig, LoRAConfig, Parallel, Stack

import archs
import test_reference_adapters
import test_reference_archs
from ckpt_helpers import outputs, randomise
from conftest import tiny_model

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_dora"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
ATOL = 1e-5
# the package puts Llama's "intermediate" LoRA on down_proj (adapterkit: up + gate): refused on import
REFUSED = {("llama", "dora_qkv_ffn_alpha")}
CASES = [(arch, case) for arch, entry in MANIFEST["archs"].items() for case in entry["cases"]
         if case not in entry["magnitude_ignored"] and (arch, case) not in REFUSED]


def _base(arch: str):
    if arch in ("bert", "roberta"):
        return test_reference_adapters.load_base(arch), test_reference_adapters.FIXTURES / arch
    return test_reference_archs.load_base(arch), test_reference_archs.FIXTURES / arch


def _hidden(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


# -- the `adapters` package ----------------------------------------------------------------------------------
def test_fixtures_record_where_the_package_fails():
    gpt2 = MANIFEST["archs"]["gpt2"]
    # its fused c_attn: shape errors for two matrices, and with one it runs plain LoRA (m is never read)
    assert set(gpt2["fails"]) == {"dora", "dora_qkv_ffn_alpha"}
    assert all("must match the size" in why for why in gpt2["fails"].values())
    assert gpt2["magnitude_ignored"] == ["dora_v_alpha"]
    for arch in ("bert", "roberta", "llama"):
        assert len(MANIFEST["archs"][arch]["cases"]) == 3 and not MANIFEST["archs"][arch]["fails"]
    assert sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file()) < 400 * 1024


@pytest.mark.parametrize("arch,case", CASES)
def test_package_saved_dora_loads_with_its_outputs(arch, case):
    base, ref_dir = _base(arch)
    model = adapterkit.init(base)
    inputs = load_file(ref_dir / "inputs.safetensors")
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")["last_hidden_state"]
    name = model.load_adapter(FIXTURES / arch / case / "saved", set_active=True)
    config = model.adapters_config[name]
    assert name == case and config.use_dora and config.dora_semantics == "adapters"
    assert config == DoRAConfig(**MANIFEST["cases"][[c["name"] for c in MANIFEST["cases"]].index(case)]["config_kwargs"])
    out = _hidden(model, inputs)
    with adapterkit.AdapterSetup(None):
        assert (_hidden(model, inputs) - expected).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    if config.alpha != config.r:  # the package's norm leaves alpha / r out: so does ours, else this differs
        magnitude = model.adapterkit[name].layers["0"]["attn_v"].magnitude
        assert magnitude.norm_scaling(2.0) == 1.0


def test_package_ffn_dora_keeps_its_placement():
    """The package puts Llama's "intermediate" DoRA on down_proj: it loads there (module-targeted) and computes
    what it computed in the package."""
    base, ref_dir = _base("llama")
    model = adapterkit.init(base)
    name = model.load_adapter(FIXTURES / "llama" / "dora_qkv_ffn_alpha" / "saved", set_active=True)
    assert any(t.endswith("mlp.down_proj") for t in model.adapters_config[name].target_modules)
    expected = load_file(FIXTURES / "llama" / "dora_qkv_ffn_alpha" / "expected.safetensors")["last_hidden_state"]
    torch.testing.assert_close(_hidden(model, load_file(ref_dir / "inputs.safetensors")), expected, atol=ATOL,
                               rtol=0)


def test_package_runs_plain_lora_on_gpt2_c_attn_and_we_run_dora():
    base, ref_dir = _base("gpt2")
    model = adapterkit.init(base)
    inputs = load_file(ref_dir / "inputs.safetensors")
    expected = load_file(FIXTURES / "gpt2" / "dora_v_alpha" / "expected.safetensors")["last_hidden_state"]
    model.load_adapter(FIXTURES / "gpt2" / "dora_v_alpha" / "saved", load_as="d", set_active=True)
    ours = _hidden(model, inputs)
    assert (ours - expected).abs().max() > 1e-2  # DoRA, not the package's plain LoRA
    config = model.adapters_config["d"]
    model.add_adapter("plain", config=config.replace(use_dora=False), set_active=True)
    with torch.no_grad():
        for (key, lora), (_, dora) in zip(model.adapter_state.layer_modules("plain"),
                                          model.adapter_state.layer_modules("d")):
            lora.lora_A.copy_(dora.lora_A)
            lora.lora_B.copy_(dora.lora_B)
    torch.testing.assert_close(_hidden(model, inputs), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_hub_export_round_trips_and_keeps_the_package_layout(arch, tmp_path):
    base, ref_dir = _base(arch)
    model = adapterkit.init(base)
    inputs = load_file(ref_dir / "inputs.safetensors")
    model.load_adapter(FIXTURES / arch / "dora" / "saved", load_as="dora", set_active=True)
    expected = _hidden(model, inputs)
    model.save_adapter(tmp_path, "dora", format="adapterhub")
    theirs = load_file(FIXTURES / arch / "dora" / "saved" / "adapter.safetensors")
    ours = load_file(tmp_path / "adapter.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    other = adapterkit.init(_base(arch)[0])
    other.load_adapter(tmp_path, set_active=True)
    assert torch.equal(_hidden(other, inputs), expected)


# -- peft -------------------------------------------------------------------------------------------------
def _biased(model, seed=3):
    """Non-zero base biases: peft leaves the bias unscaled, the package scales it; zero biases hide that."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def _base_for_peft(arch):
    return _biased(tiny_model(arch) if arch in ("bert", "roberta") else archs.model(arch))


def _batch(arch):
    return archs.inputs(arch) if arch not in ("bert", "roberta") else {
        k: v for k, v in archs.inputs("bert").items()}


def _randomised_peft(arch, config, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(_base_for_peft(arch), config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + torch.randn(p.shape, generator=g) * 0.3)
            elif "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


PEFT_CASES = {
    "bert": lambda: peft.LoraConfig(r=4, lora_alpha=12, use_dora=True, target_modules=["query", "value",
                                                                                        "intermediate.dense"]),
    "bert_rslora": lambda: peft.LoraConfig(r=4, lora_alpha=6, use_dora=True, use_rslora=True,
                                           target_modules=["key", "attention.output.dense"]),
    # GPT-2's Conv1D (peft transposes it: fan_in_fan_out)
    "gpt2": lambda: peft.LoraConfig(r=2, lora_alpha=4, use_dora=True, target_modules=["attn.c_proj", "mlp.c_fc"]),
    "llama": lambda: peft.LoraConfig(r=2, lora_alpha=4, use_dora=True, target_modules=["q_proj", "k_proj",
                                                                                        "v_proj", "down_proj"]),
}


@pytest.mark.parametrize("case", sorted(PEFT_CASES))
def test_peft_saved_dora_loads_with_peft_outputs(case, tmp_path):
    arch = case.split("_")[0]
    peft_model = _randomised_peft(arch, PEFT_CASES[case]())
    batch = _batch(arch)
    expected = _hidden(peft_model, batch)
    peft_model.save_pretrained(tmp_path)
    model = adapterkit.init(_base_for_peft(arch))
    name = model.load_adapter(tmp_path, load_as="p", set_active=True)
    config = model.adapters_config[name]
    assert config.use_dora and config.dora_semantics == "peft"
    with adapterkit.AdapterSetup(None):
        assert (_hidden(model, batch) - expected).abs().max() > 1e-2
    assert (_hidden(model, batch) - expected).abs().max() <= ATOL
    n_peft = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in model.adapterkit[name].parameters()) == n_peft


@pytest.mark.parametrize("arch,config", [
    ("bert", "dora[r=4,alpha=12,dora_semantics='peft',attn_matrices=['q','k','v','o'],intermediate_lora=True]"),
    ("gpt2", "dora[r=2,alpha=6,dora_semantics='peft',selfattn_lora=False,intermediate_lora=True,output_lora=True]"),
    ("llama", "dora[r=2,alpha=3,dora_semantics='peft',use_rslora=True,attn_matrices=['k','v']]"),
])
def test_our_peft_dora_export_loads_in_peft_with_our_outputs(arch, config, tmp_path):
    model = adapterkit.init(_base_for_peft(arch))
    model.add_adapter("a", config=config, set_active=True)
    randomise(model.adapterkit["a"])
    batch = _batch(arch)
    expected = _hidden(model, batch)
    model.save_adapter(tmp_path, "a", format="peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.PeftModel.from_pretrained(_base_for_peft(arch), tmp_path).eval()
    assert (_hidden(peft_model, batch) - expected).abs().max() <= ATOL
    back = adapterkit.init(_base_for_peft(arch))
    back.load_adapter(tmp_path, load_as="a", set_active=True)
    assert torch.equal(_hidden(back, batch), expected)


def test_peft_dropout_in_training_is_peft_s():
    """peft with active dropout adds `(scale - 1) W x' + scale dW x'` to `W x + b`; same dropout masks, same
    output."""
    peft_model = _randomised_peft("bert", peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, use_dora=True,
                                                           target_modules=["query", "value"]))
    model = adapterkit.init(_base_for_peft("bert"))
    model.add_adapter("a", config="dora[r=4,alpha=8,dropout=0.3,dora_semantics='peft']", set_active=True)
    with torch.no_grad():
        for (i, loc), module in model.adapter_state.layer_modules("a"):
            layer = peft_model.base_model.model.encoder.layer[i].attention.self
            target = layer.query if loc == "attn_q" else layer.value
            module.lora_A.copy_(target.lora_A["default"].weight)
            module.lora_B.copy_(target.lora_B["default"].weight)
            module.magnitude.weight.copy_(target.lora_magnitude_vector["default"].weight)
    batch = _batch("bert")
    peft_model.train()
    model.train_adapter("a")
    torch.manual_seed(11)
    expected = peft_model(**batch).last_hidden_state
    torch.manual_seed(11)
    out = model(**batch).last_hidden_state
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    model.eval()
    assert (_hidden(model, batch) - out).abs().max() > 1e-3  # the dropout was on


@pytest.mark.parametrize("semantics,fmt,message", [
    ("adapters", "peft", "dora_semantics='adapters'.*another function than peft's DoRA"),
    ("peft", "adapterhub", "dora_semantics='peft'.*another function than the `adapters` package's DoRA"),
])
def test_export_to_the_other_package_s_format_is_refused(semantics, fmt, message, tmp_path):
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config=f"dora[dora_semantics='{semantics}']")
    with pytest.raises(AdapterConfigError, match=message):
        model.save_adapter(tmp_path / "x", "a", format=fmt)
    assert not (tmp_path / "x").exists()


def test_peft_export_of_a_fused_c_attn_part_is_refused(tmp_path):
    model = adapterkit.init(archs.model("gpt2"))
    model.add_adapter("a", config="dora[dora_semantics='peft']")
    with pytest.raises(AdapterConfigError, match="slice of a fused projection"):
        model.save_adapter(tmp_path / "x", "a", format="peft")


# -- beyond the references: fused c_attn, grouped-query k/v ------------------------------------------------
@pytest.mark.parametrize("arch,config", [("gpt2", "dora[attn_matrices=['q','k','v'],output_lora=True]"),
                                         ("gpt2", "dora[attn_matrices=['k'],dora_semantics='peft']"),
                                         ("llama", "dora[attn_matrices=['q','k','v'],alpha=16]"),
                                         ("llama", "dora[attn_matrices=['k','v'],dora_semantics='peft']")])
def test_trains_merges_and_resets_on_fused_and_grouped_query_projections(arch, config):
    import transformers as tf
    cls = tf.GPT2LMHeadModel if arch == "gpt2" else tf.LlamaForCausalLM
    model = adapterkit.init(archs.model(arch, cls=cls, initializer_range=0.2))
    model.add_adapter("a", config=config)
    model.train_adapter("a")
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    batch = archs.inputs(arch)
    losses = []
    for _ in range(12):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    model.eval()
    base = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}
    with torch.no_grad():
        unmerged = model(**batch).logits
        model.merge_adapter("a")
        merged = model(**batch).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    model.reset_adapter("a")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base.items())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, unmerged)


@pytest.mark.parametrize("semantics", ["adapters", "peft"])
def test_merge_scales_the_bias_as_the_forward_does(semantics):
    model = adapterkit.init(_biased(tiny_model("bert")))
    model.add_adapter("a", config=f"dora[alpha=16,dora_semantics='{semantics}']", set_active=True)
    randomise(model.adapterkit["a"])
    bias = model.encoder.layer[0].attention.self.query.bias.clone()
    batch = _batch("bert")
    unmerged = outputs(model, batch)
    model.merge_adapter("a")
    changed = not torch.equal(model.encoder.layer[0].attention.self.query.bias, bias)
    assert changed == (semantics == "adapters")
    torch.testing.assert_close(outputs(model, batch), unmerged, atol=1e-5, rtol=0)


# -- the norm: gradients, the cache ------------------------------------------------------------------------
@pytest.mark.parametrize("semantics", ["adapters", "peft"])
def test_norm_gradient_flows_for_the_package_and_is_detached_for_peft(semantics):
    """The package keeps ||W + B A|| in the graph, peft detaches it: the gradients of A and B differ by exactly
    that term. Checked against the same math written out with the full (out, in) matrix."""
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config=f"dora[r=2,alpha=6,attn_matrices=['q'],dora_semantics='{semantics}']")
    model.train_adapter("a")
    randomise(model.adapterkit["a"])
    module = model.adapter_state.module_at("a", (0, "attn_q"))
    linear = model.encoder.layer[0].attention.self.query
    x = torch.randn(2, 5, linear.in_features)
    plain = torch.nn.functional.linear(x, linear.weight, linear.bias)  # (linear(x) would run the adapter too)
    out = module(x, plain)
    a, b, m = (t.detach().clone().requires_grad_() for t in (module.lora_A, module.lora_B, module.magnitude.weight))
    s = module.scaling
    norm = torch.linalg.norm(linear.weight + (s if semantics == "peft" else 1.0) * b @ a, dim=1)
    norm = norm.detach() if semantics == "peft" else norm
    y = plain + s * x @ a.t() @ b.t()
    expected = (m / norm) * (y if semantics == "adapters" else y - linear.bias) \
        + (0 if semantics == "adapters" else linear.bias)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    w = torch.randn(out.shape)
    grads = torch.autograd.grad((out * w).sum(), [module.lora_A, module.lora_B, module.magnitude.weight])
    for got, want in zip(grads, torch.autograd.grad((expected * w).sum(), [a, b, m])):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_cached_norm_follows_in_place_changes_and_reloads():
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config="dora", set_active=True)
    randomise(model.adapterkit["a"])
    batch = _batch("bert")
    first = outputs(model, batch)  # fills the caches
    assert torch.equal(outputs(model, batch), first)
    with torch.no_grad():  # the adapter, then the base weight, changed in place (an optimiser step, load_state_dict)
        model.adapterkit["a"].layers["0"]["attn_q"].lora_B.mul_(2)
        changed = outputs(model, batch)
        fresh = copy.deepcopy(model)  # no cache carried over: computed from scratch
        fresh.adapter_state.module_at("a", (0, "attn_q")).magnitude._cache.clear()
        assert torch.equal(outputs(fresh, batch), changed) and not torch.equal(changed, first)
        model.encoder.layer[1].attention.self.value.weight.add_(0.1)
    again = outputs(model, batch)
    model.train()  # the graph path computes the norm anew
    torch.testing.assert_close(model(**batch).last_hidden_state.detach(), again, atol=1e-5, rtol=0)
    assert not torch.equal(again, changed)


def test_default_init_is_the_identity_for_either_semantics():
    for semantics in ("adapters", "peft"):
        model = adapterkit.init(_biased(tiny_model("bert")))
        base = outputs(model, _batch("bert"))
        model.add_adapter("a", config=f"dora[dora_semantics='{semantics}',intermediate_lora=True]",
                          set_active=True)
        assert torch.equal(outputs(model, _batch("bert")), base)


# -- composition --------------------------------------------------------------------------------------------
def test_row_blocks_give_each_row_its_adapter_alone():
    model = adapterkit.init(tiny_model("bert"))
    for name, config in {"a": "dora", "b": "dora[r=4,alpha=8,dora_semantics='peft']", "l": "lora"}.items():
        model.add_adapter(name, config=config)
    randomise(model.adapterkit)
    batch = _batch("bert")
    alone = {}
    for name in ("a", "b", "l"):
        with adapterkit.AdapterSetup(name):
            alone[name] = outputs(model, batch)
    with adapterkit.AdapterSetup(BatchSplit("a", "b", "l", batch_sizes=[1, 1, 1])):
        split = outputs(model, batch)
    for row, name in enumerate("abl"):
        torch.testing.assert_close(split[row], alone[name][row], atol=1e-5, rtol=0)
    with adapterkit.AdapterSetup(Parallel("a", "b")):
        parallel = outputs(model, batch)
    torch.testing.assert_close(parallel, torch.cat([alone["a"], alone["b"]]), atol=1e-5, rtol=0)
    with torch.no_grad():
        routed = model(**batch, adapter_names=["b", "a", "l"]).last_hidden_state
    for row, name in enumerate("bal"):
        torch.testing.assert_close(routed[row], alone[name][row], atol=1e-5, rtol=0)
    with adapterkit.AdapterSetup(Average("a", "b", weights=[1.0, 0.0])):
        torch.testing.assert_close(outputs(model, batch), alone["a"], atol=1e-5, rtol=0)
    with adapterkit.AdapterSetup(Stack("a", "b")):
        stacked = outputs(model, batch)
    assert (stacked - alone["a"]).abs().max() > 1e-3 and (stacked - alone["b"]).abs().max() > 1e-3


def test_averaging_dora_is_linear_only():
    model = adapterkit.init(tiny_model("bert"))
    model.add_adapter("a", config="dora")
    model.add_adapter("b", config="dora")
    model.average_adapter("avg", ["a", "b"], weights=[0.5, 0.5])  # every tensor, magnitude included
    assert model.adapters_config["avg"].use_dora
    for strategy in ("lora_delta_w_svd", "lora_linear_only_negate_b", "cat"):
        with pytest.raises(AdapterError, match="DoRA adapter .*use 'linear'"):
            model.average_adapter(f"x_{strategy}", ["a", "b"], combine_strategy=strategy,
                                  **({"svd_rank": 2} if "svd" in strategy else {}))


# -- configs ------------------------------------------------------------------------------------------------
def test_config_names_and_defaults():
    assert adapterkit.DoRAConfig is adapterkit.configs.DoRAConfig is DoRAConfig
    config = adapterkit.resolve_config("dora")
    assert isinstance(config, DoRAConfig) and config == LoRAConfig(use_dora=True)
    assert (config.r, config.alpha, config.attn_matrices, config.dora_semantics) == (8, 8, ["q", "v"], "adapters")


@pytest.mark.parametrize("fields,message", [
    ({"r": 0}, "r=0"), ({"r": -2}, "r=-2"), ({"alpha": 0}, "alpha"), ({"dora_semantics": "lycoris"}, "dora_semantics"),
    ({"use_dora": "yes"}, "use_dora"), ({"composition_mode": "scale", "r": 1}, "use_dora is for LoRA"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_fields_are_clear_errors(fields, message):
    with pytest.raises(AdapterConfigError, match=message):
        DoRAConfig(**fields)
    with pytest.raises(AdapterConfigError, match="use_dora is for LoRA"):
        adapterkit.resolve_config("ia3[use_dora=True]")
