"""LoRA's base-changing inits (peft's PiSSA, PiSSA with fast SVD, OLoRA) against peft, in process: the same
factors and residual from one weight, peft's saved directories load here with peft's outputs and ours load in peft
with ours; the model output is unchanged at init; deleting the adapter restores the base bit for bit (fused GPT-2
c_attn and grouped-query Llama k/v included); the conversion to a plain LoRA of rank 2r; clear errors."""

from __future__ import annotations

import json
import warnings

import peft  # a test dependency: these checks must run, never skip
import pytest
import torch

import adapterkit
import archs
from adapterkit import AdapterConfigError, AdapterError, LoRAConfig

ATOL = 1e-5
INITS = ["pissa", "pissa_niter_2", "olora"]
# (arch, peft target_modules, adapterkit config fields selecting the same projections)
TARGETS = {
    "bert": (["query", "value"], {}),
    "llama": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
              {"attn_matrices": ["q", "k", "v", "o"], "intermediate_lora": True, "output_lora": True}),
}


def _out(model, inputs):
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _base_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}


def _same_base(model, before) -> bool:
    after = _base_state(model)
    return after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def _trained(params, seed=1):
    """Move the LoRA factors as training would (a PiSSA adapter at its init hides a wrong base)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _peft_model(arch, init, r=4, alpha=8, seed=5, **extra):
    base = archs.model(arch)  # seeds the RNG itself
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS[arch][0], init_lora_weights=init, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(base, config).eval()


def _load_in_peft(arch, directory, seed=5):
    base = archs.model(arch)
    torch.manual_seed(seed)  # pissa_niter redoes its randomised SVD on load, as when it was made
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(base, directory).eval()


def _ours(arch, init, r=4, alpha=8, seed=5, **extra):
    model = adapterkit.init(archs.model(arch))
    torch.manual_seed(seed)
    model.add_adapter("p", config=LoRAConfig(r=r, alpha=alpha, init_weights=init, **TARGETS[arch][1], **extra),
                      set_active=True)
    return model


@pytest.mark.parametrize("init", INITS)
def test_factors_and_residual_are_peft_s(init):
    """One seed and one weight: peft's lora_A, lora_B and residual base weight, bit for bit."""
    peft_model = _peft_model("bert", init)
    model = _ours("bert", init)
    for i in range(2):
        theirs = peft_model.base_model.model.encoder.layer[i].attention.self.query
        mine = model.adapterkit["p"].layers[str(i)]["attn_q"]
        assert torch.equal(mine.lora_A, theirs.lora_A.default.weight)
        assert torch.equal(mine.lora_B, theirs.lora_B.default.weight)
        assert torch.equal(model.encoder.layer[i].attention.self.query.weight, theirs.base_layer.weight)


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("init", INITS)
def test_peft_saved_directory_loads_with_peft_s_outputs(arch, init, tmp_path):
    peft_model = _peft_model(arch, init)
    _trained([p for n, p in peft_model.named_parameters() if "lora_" in n])
    peft_model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["init_lora_weights"] == init
    inputs = archs.inputs(arch)
    expected = _out(_load_in_peft(arch, tmp_path), inputs)  # peft redoes the init on the fresh base, then loads
    if init != "pissa_niter_2":  # deterministic inits: what peft loads is what it trained
        assert (_out(peft_model, inputs) - expected).abs().max() <= ATOL
    model = adapterkit.init(archs.model(arch))
    torch.manual_seed(5)
    model.load_adapter(tmp_path, load_as="p", set_active=True)
    assert model.adapters_config["p"].init_weights == init
    with adapterkit.AdapterSetup(None):
        assert (_out(model, inputs) - expected).abs().max() > 1e-3  # the adapter matters
    assert (_out(model, inputs) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("init", INITS)
def test_our_peft_export_loads_in_peft_with_our_outputs(arch, init, tmp_path):
    model = _ours(arch, init)
    _trained(model.adapterkit["p"].parameters())
    inputs = archs.inputs(arch)
    expected = _out(model, inputs)
    model.save_adapter(tmp_path, "p", format="peft")
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["init_lora_weights"] == init  # saved as-is: peft makes the residual on load
    assert (_out(_load_in_peft(arch, tmp_path), inputs) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("init", INITS)
def test_init_keeps_outputs_and_delete_restores_the_base_bit_for_bit(arch, init):
    """Fused GPT-2 c_attn (q, k, v slices of one weight) and grouped-query Llama k/v included."""
    model = adapterkit.init(archs.model(arch))
    inputs = archs.inputs(arch)
    base, before = _out(model, inputs), _base_state(model)
    model.add_adapter("p", config=LoRAConfig(r=4, alpha=8, init_weights=init, attn_matrices=["q", "k", "v", "o"],
                                             output_lora=True), set_active=True)
    assert not _same_base(model, before)  # the init wrote the residual
    assert (_out(model, inputs) - base).abs().max() <= ATOL
    _trained(model.adapterkit["p"].parameters())
    residual, trained = _base_state(model), _out(model, inputs)
    model.merge_adapter("p")
    assert (_out(model, inputs) - trained).abs().max() <= ATOL
    model.reset_adapter("p")
    assert _same_base(model, residual)  # reset undoes the merge exactly: back to the residual
    assert torch.equal(_out(model, inputs), trained)
    model.merge_adapter("p")
    model.delete_adapter("p")  # merged: reset, then the init's rows written back
    assert _same_base(model, before)
    assert torch.equal(_out(model, inputs), base)


def test_failed_add_and_overwrite_restore_the_base(tmp_path):
    model = adapterkit.init(archs.model("llama"))
    before = _base_state(model)
    model.add_adapter("p", config="lora[init_weights='pissa',r=4]")
    model.add_adapter("p", config="lora[init_weights='olora',r=4]", overwrite_ok=True)
    model.delete_adapter("p")
    assert _same_base(model, before)
    # r=20 fits q (32 x 32) but not the grouped-query k / v (16 x 32): the rows q got are restored
    with pytest.raises(AdapterError, match=r"needs r <= min\(in, out\).*r=20 on a 16 x 32 weight"):
        model.add_adapter("p", config="lora[init_weights='pissa',r=20,attn_matrices=['q','k']]")
    assert _same_base(model, before) and "p" not in model.adapters_config


def test_native_format_round_trip(tmp_path):
    model = _ours("llama", "pissa")
    _trained(model.adapterkit["p"].parameters())
    inputs = archs.inputs("llama")
    expected = _out(model, inputs)
    model.save_adapter(tmp_path, "p")
    back = adapterkit.init(archs.model("llama"))
    back.load_adapter(tmp_path, set_active=True)
    assert torch.equal(_out(back, inputs), expected)  # the residual is redone from the same weight: exact


@pytest.mark.parametrize("init", INITS)
def test_convert_to_plain_lora_equals_peft_s_conversion(init, tmp_path):
    peft_model = _peft_model("bert", init)
    model = _ours("bert", init)
    g = torch.Generator().manual_seed(3)
    ours = dict(model.adapterkit["p"].named_parameters())
    with torch.no_grad():
        for i in range(2):
            for loc, name in (("attn_q", "query"), ("attn_v", "value")):
                theirs = getattr(peft_model.base_model.model.encoder.layer[i].attention.self, name)
                for f in ("A", "B"):
                    delta = torch.randn(ours[f"layers.{i}.{loc}.lora_{f}"].shape, generator=g) * 0.1
                    ours[f"layers.{i}.{loc}.lora_{f}"].add_(delta)
                    getattr(theirs, f"lora_{f}").default.weight.add_(delta)
    inputs = archs.inputs("bert")
    expected = _out(model, inputs)
    # peft: save the initial adapter (init_lora_weights=True) before training, then convert at save time
    initial = _peft_model("bert", init)
    initial.peft_config["default"].init_lora_weights = True
    initial.save_pretrained(tmp_path / "init")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(tmp_path / "converted", path_initial_model_for_weight_conversion=tmp_path / "init")
    model.convert_to_plain_lora("p")
    config = model.adapters_config["p"]
    assert (config.r, config.alpha, config.init_weights) == (8, 16, "lora")
    assert _same_base(model, _base_state(adapterkit.init(archs.model("bert"))))  # the original base, exactly
    assert (_out(model, inputs) - expected).abs().max() <= ATOL
    fresh = adapterkit.init(archs.model("bert"))
    fresh.load_adapter(tmp_path / "converted", load_as="c", set_active=True)  # peft's conversion, on a plain base
    assert (_out(fresh, inputs) - expected).abs().max() <= ATOL
    model.save_adapter(tmp_path / "hub", "p", format="adapterhub")  # now any format holds it
    again = adapterkit.init(archs.model("bert"))
    again.load_adapter(tmp_path / "hub", set_active=True)
    assert torch.equal(_out(again, inputs), _out(model, inputs))


def test_rslora_conversion_keeps_the_scaling():
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("p", config="lora[init_weights='olora',r=4,alpha=6,use_rslora=True]", set_active=True)
    _trained(model.adapterkit["p"].parameters())
    inputs = archs.inputs("bert")
    expected = _out(model, inputs)
    model.convert_to_plain_lora("p")
    assert model.adapters_config["p"].scaling == pytest.approx(6 / 2)
    assert (_out(model, inputs) - expected).abs().max() <= ATOL


def test_adapters_sharing_rows_with_an_init_are_refused():
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("p", config="lora[init_weights='pissa',r=4]")
    with pytest.raises(AdapterError, match="cannot add 'q': adapter 'p' changed at its init .*query.*"
                                           r"delete_adapter\('p'\) first"):
        model.add_adapter("q", config="lora[init_weights='olora',r=4]")
    assert "q" not in model.adapters_config
    model.add_adapter("x", config="lora[r=2]")
    model.adapterkit["x"].layers["0"]["attn_q"].lora_B.data.normal_()
    model.merge_adapter("x")  # merging over the residual is fine: its reset gives the residual back
    with pytest.raises(AdapterError, match=r"cannot delete 'p'.*'x' is merged into the same rows; "
                                           r"reset_adapter\('x'\) first"):
        model.delete_adapter("p")
    model.reset_adapter("x")
    model.delete_adapter("p")


def test_exports_that_would_lose_the_residual_are_refused(tmp_path):
    model = _ours("bert", "pissa")
    with pytest.raises(AdapterConfigError, match="convert_to_plain_lora"):
        model.save_adapter(tmp_path / "hub", "p", format="adapterhub")
    with pytest.raises(AdapterError, match="only adapters whose init changed the base weights"):
        model.add_adapter("plain", config="lora") or model.convert_to_plain_lora("plain")


@pytest.mark.parametrize("value,message", [
    ("svd", "init_weights='svd' is not allowed; allowed values: 'lora', .*'pissa', 'pissa_niter_<N>', 'olora'"),
    ("pissa_niter_0", "must be an integer >= 1"), ("pissa_niter_-2", "must be an integer >= 1"),
    ("pissa_niter_1.5", "must be an integer >= 1"), ("pissa_niter_", "must be an integer >= 1"),
    ("pissa_niter_x", "must be an integer >= 1"), (True, "init_weights=True is not allowed"),
])
def test_bad_init_names_are_refused(value, message):
    with pytest.raises(AdapterConfigError, match=message):
        LoRAConfig(init_weights=value)


def test_base_changing_inits_need_plain_lora():
    with pytest.raises(AdapterConfigError, match="use_gating=True"):
        LoRAConfig(init_weights="pissa", use_gating=True)
    with pytest.raises(AdapterConfigError, match="composition_mode='add'"):
        LoRAConfig(init_weights="olora", composition_mode="scale", r=1)


@pytest.mark.parametrize("init", ["pissa", "olora"])
@pytest.mark.parametrize("arch", list(archs.ARCHS))
def test_every_architecture_keeps_outputs_and_restores_the_base(arch, init):
    model = adapterkit.init(archs.model(arch))
    inputs = archs.inputs(arch)
    base, before = _first(model, inputs), _base_state(model)
    model.add_adapter("p", config=LoRAConfig(r=2, init_weights=init, attn_matrices=["q", "k", "v", "o"],
                                             intermediate_lora=True, output_lora=True), set_active=True)
    assert not _same_base(model, before)
    assert (_first(model, inputs) - base).abs().max() <= ATOL
    model.delete_adapter("p")
    assert _same_base(model, before)


def _first(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def test_pissa_with_rank_and_alpha_patterns_both_ways(tmp_path):
    patterns = dict(rank_pattern={"layer.0.attention.self.query": 2}, alpha_pattern={"value": 3})
    peft_model = _peft_model("bert", "pissa", **patterns)
    _trained([p for n, p in peft_model.named_parameters() if "lora_" in n])
    inputs = archs.inputs("bert")
    peft_model.save_pretrained(tmp_path / "peft")
    expected = _out(_load_in_peft("bert", tmp_path / "peft"), inputs)
    model = adapterkit.init(archs.model("bert"))
    model.load_adapter(tmp_path / "peft", load_as="p", set_active=True)
    assert model.adapterkit["p"].layers["0"]["attn_q"].lora_A.shape[0] == 2
    assert (_out(model, inputs) - expected).abs().max() <= ATOL
    model.save_adapter(tmp_path / "ours", "p", format="peft")
    assert (_out(_load_in_peft("bert", tmp_path / "ours"), inputs) - expected).abs().max() <= ATOL
    model.convert_to_plain_lora("p")
    config = model.adapters_config["p"]
    assert (config.rank_pattern, config.alpha_pattern) == ({"layer.0.attention.self.query": 4}, {"value": 6})
    assert (_out(model, inputs) - expected).abs().max() <= ATOL
