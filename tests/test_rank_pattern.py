"""`rank_pattern` / `alpha_pattern` (peft's per-module r and alpha) on LoRA: the same shapes and scalings as peft on
the same model, peft's saved directories load here with its outputs, ours load in peft with ours, and bad values
are named."""

from __future__ import annotations

import warnings

import peft  # a test dependency: these checks must run, never skip
import pytest
import torch

import adapterkit
import archs
from adapterkit import AdapterConfigError, AdapterError, LoRAConfig

from ckpt_helpers import randomise

ATOL = 1e-5
CASES = {
    # name: (arch, peft fields, adapterkit fields); the patterns are given verbatim to both
    "suffix": ("bert", dict(target_modules=["query", "value"], rank_pattern={"query": 2, "layer.1.attention.self.value": 6},
                            alpha_pattern={"value": 3}), {}),
    "regex_first_wins": ("bert", dict(target_modules=["query", "key", "value"],
                                      rank_pattern={r"layer\.0\..*": 3, "key": 5}, alpha_pattern={r"(query|key)": 2.5}),
                         {"attn_matrices": ["q", "k", "v"]}),
    "regex": ("bert", dict(target_modules=["query", "key"], rank_pattern={r"layer\.[01]\.attention\.self\.query": 6},
                           alpha_pattern={r"(query|key)": 2.5}), {"attn_matrices": ["q", "k"]}),
    "rslora_anchored": ("bert", dict(target_modules=["query", "value", "intermediate.dense"], use_rslora=True,
                                     rank_pattern={"^encoder.layer.1.intermediate.dense": 16}),
                        {"attn_matrices": ["q", "v"], "intermediate_lora": True, "use_rslora": True}),
    "llama_gqa": ("llama", dict(target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
                                rank_pattern={"k_proj": 2, "layers.1.self_attn.v_proj": 8}, alpha_pattern={"down_proj": 12}),
                  {"attn_matrices": ["q", "k", "v"], "output_lora": True}),
}


def _peft(arch, fields, seed=0):
    base = archs.model(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, **fields)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _ours(arch, peft_fields, fields):
    model = adapterkit.init(archs.model(arch))
    patterns = {k: peft_fields[k] for k in ("rank_pattern", "alpha_pattern") if k in peft_fields}
    model.add_adapter("a", config=LoRAConfig(r=4, alpha=8, **fields, **patterns), set_active=True)
    return model


def _out(model, inputs):
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _peft_layers(model) -> dict:
    """module name -> (lora_A shape, lora_B shape, scaling) of a peft model."""
    return {n.removeprefix("base_model.model."): (tuple(m.lora_A["default"].weight.shape),
                                                   tuple(m.lora_B["default"].weight.shape), m.scaling["default"])
            for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}


def _our_layers(model) -> dict:
    state = model.adapter_state
    names = {id(m): n for n, m in model.named_modules()}
    return {names[id(state.sites[key].target.module)]: (tuple(m.lora_A.shape), tuple(m.lora_B.shape), m.scaling)
            for key, m in state.layer_modules("a")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shapes_and_scalings_are_peft_s(case):
    arch, peft_fields, fields = CASES[case]
    theirs = _peft_layers(_peft(arch, peft_fields))
    mine = _our_layers(_ours(arch, peft_fields, fields))
    assert mine.keys() == theirs.keys()
    for name, (a, b, s) in theirs.items():
        assert mine[name][:2] == (a, b), name
        assert mine[name][2] == pytest.approx(s, rel=1e-12), name
    assert len({v[0][0] for v in mine.values()}) > 1  # the patterns gave some modules another r


@pytest.mark.parametrize("case", sorted(set(CASES) - {"regex_first_wins"}))
def test_peft_saved_directory_loads_with_peft_s_outputs(case, tmp_path):
    arch, peft_fields, _ = CASES[case]
    peft_model = _peft(arch, peft_fields)
    inputs = archs.inputs(arch)
    expected = _out(peft_model, inputs)
    peft_model.save_pretrained(tmp_path)
    model = adapterkit.init(archs.model(arch))
    model.load_adapter(tmp_path, load_as="p", set_active=True)
    config = model.adapters_config["p"]
    assert config.rank_pattern == peft_fields.get("rank_pattern", {})
    assert config.alpha_pattern == peft_fields.get("alpha_pattern", {})
    assert (_out(model, inputs) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("case", sorted(CASES))
def test_our_export_loads_in_peft_with_our_outputs(case, tmp_path):
    arch, peft_fields, fields = CASES[case]
    model = _ours(arch, peft_fields, fields)
    randomise(model.adapterkit["a"])
    inputs = archs.inputs(arch)
    expected = _out(model, inputs)
    model.save_adapter(tmp_path, "a", format="peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.PeftModel.from_pretrained(archs.model(arch), tmp_path).eval()
    assert (_out(peft_model, inputs) - expected).abs().max() <= ATOL
    theirs, mine = _peft_layers(peft_model), _our_layers(model)
    assert {k: v[:2] for k, v in theirs.items()} == {k: v[:2] for k, v in mine.items()}
    assert all(theirs[k][2] == pytest.approx(mine[k][2], rel=1e-12) for k in mine)
    back = adapterkit.init(archs.model(arch))
    back.load_adapter(tmp_path, set_active=True)
    assert torch.equal(_out(back, inputs), expected)
    model.save_adapter(tmp_path / "native", "a")
    again = adapterkit.init(archs.model(arch))
    again.load_adapter(tmp_path / "native", set_active=True)
    assert torch.equal(_out(again, inputs), expected)


def test_merge_and_reset_with_patterns():
    arch, peft_fields, fields = CASES["llama_gqa"]
    model = _ours(arch, peft_fields, fields)
    randomise(model.adapterkit["a"])
    inputs = archs.inputs(arch)
    expected = _out(model, inputs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.merge_adapter("a")
    assert (_out(model, inputs) - expected).abs().max() <= ATOL
    model.reset_adapter("a")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_key_matching_nothing_warns_as_peft():
    fields = dict(target_modules=["query"], rank_pattern={"nothing_here": 2})
    with pytest.warns(RuntimeWarning, match=r"rank_pattern keys did not match any targeted module.*nothing_here"):
        peft.get_peft_model(archs.model("bert"), peft.LoraConfig(r=4, **fields))
    model = adapterkit.init(archs.model("bert"))
    with pytest.warns(RuntimeWarning, match=r"rank_pattern keys did not match any adapted module.*nothing_here"):
        model.add_adapter("a", config=LoRAConfig(rank_pattern={"nothing_here": 2}, alpha_pattern={"query": 4}))
    assert {m.lora_A.shape[0] for _, m in model.adapter_state.layer_modules("a")} == {8}


@pytest.mark.parametrize("fields,message", [
    ({"rank_pattern": {"query": 0}}, r"rank_pattern\['query'\]=0 must be an integer >= 1"),
    ({"rank_pattern": {"query": -2}}, r"rank_pattern\['query'\]=-2 must be an integer >= 1"),
    ({"rank_pattern": {"query": 2.5}}, r"rank_pattern\['query'\]=2.5 must be an integer"),
    ({"rank_pattern": {"query": True}}, r"rank_pattern\['query'\]=True must be an integer"),
    ({"alpha_pattern": {"value": 0}}, r"alpha_pattern\['value'\]=0 must be a finite number > 0"),
    ({"rank_pattern": {"(": 2}}, r"rank_pattern key '\(' is not a valid regular expression"),
    ({"rank_pattern": {"": 2}}, "must be a non-empty string"),
    ({"rank_pattern": ["query"]}, "must be a mapping of module-name patterns to ranks"),
    ({"init_weights": "orthogonal", "r": 4, "rank_pattern": {"query": 3}}, "needs an even r"),
    ({"composition_mode": "scale", "r": 1, "rank_pattern": {"query": 2}}, "rank_pattern / alpha_pattern are for LoRA"),
])
def test_bad_patterns_are_named(fields, message):
    with pytest.raises(AdapterConfigError, match=message):
        LoRAConfig(**fields)


def test_patterns_round_trip_and_refusals(tmp_path):
    config = LoRAConfig(rank_pattern={"query": 2}, alpha_pattern={"value": 3.0})
    assert adapterkit.AdapterConfig.from_dict(config.to_dict()) == config
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("a", config=config)
    with pytest.raises(AdapterConfigError, match="AdapterHub LoRA has one r and alpha per adapter"):
        model.save_adapter(tmp_path, "a", format="adapterhub")
    model.add_adapter("b", config=config)
    with pytest.raises(AdapterError, match="needs one r and alpha per adapter"):
        model.average_adapter("c", ["a", "b"], combine_strategy="cat")


def test_order_dependent_patterns_are_stored_order_free(tmp_path):
    """A module matched by two keys with different values gets the first's (peft's rule). peft writes its config
    with sorted keys, so its own file of such an adapter gives that module the other value and peft cannot load it
    (shape errors); adapterkit stores the result per module, so every save reloads the same, in peft too."""
    arch, peft_fields, fields = CASES["regex_first_wins"]
    peft_model = _peft(arch, peft_fields)
    peft_model.save_pretrained(tmp_path / "peft")
    with pytest.raises(RuntimeError, match="size mismatch"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft.PeftModel.from_pretrained(archs.model(arch), tmp_path / "peft")
    model = adapterkit.init(archs.model(arch))
    with pytest.raises(adapterkit.CheckpointError, match="wrong shapes"):
        model.load_adapter(tmp_path / "peft")
    model = _ours(arch, peft_fields, fields)
    pattern = model.adapters_config["a"].rank_pattern
    assert pattern == {r"^encoder\.layer\.0\.attention\.self\.query": 3, r"^encoder\.layer\.0\.attention\.self\.key": 3,
                       r"^encoder\.layer\.0\.attention\.self\.value": 3, r"^encoder\.layer\.1\.attention\.self\.key": 5}
    assert _our_layers(model) == _peft_layers(peft_model)  # the same ranks and scalings as peft made
