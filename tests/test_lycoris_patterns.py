"""`rank_pattern` / `alpha_pattern` (peft's per-module r and alpha) on LoHa and LoKr: the same factor shapes and
scalings as peft on the same model, peft's saved directories load here with its outputs, ours load in peft with
ours, native round trips and merge / reset are exact, and bad values are named."""

from __future__ import annotations

import json
import warnings

import peft  # a test dependency: these checks must run, never skip
import pytest
import torch

import adapterkit
import archs
from adapterkit import AdapterConfigError, LoHaConfig, LoKrConfig

from ckpt_helpers import randomise

ATOL = 1e-5
FACTOR_NAMES = ("hada_", "lokr_")
PEFT = {"loha": (peft.LoHaConfig, LoHaConfig), "lokr": (peft.LoKrConfig, LoKrConfig)}
CASES = {
    # name: (method, arch, shared fields, peft targets, adapterkit targets); patterns given verbatim to both
    "loha_bert": ("loha", "bert", dict(r=4, alpha=8, rank_pattern={"query": 2, "layer.1.attention.self.value": 6},
                                       alpha_pattern={"value": 3}),
                  ["query", "value", "intermediate.dense"], dict(attn_matrices=["q", "v"], intermediate=True)),
    "loha_regex": ("loha", "bert", dict(r=3, alpha=5, rank_pattern={r"layer\.[01]\.attention\.self\.query": 6},
                                        alpha_pattern={r"(query|key)": 2.5}),
                   ["query", "key", "value"], dict(attn_matrices=["q", "k", "v"])),
    # decompose_both: query (r=1) gets both factors low-rank, key (r=2) only W2, the rest (r=4) neither
    "lokr_bert": ("lokr", "bert", dict(r=4, alpha=8, decompose_both=True, rank_pattern={"query": 1, "key": 2},
                                       alpha_pattern={"intermediate.dense": 0.5}),
                  ["query", "key", "intermediate.dense"], dict(attn_matrices=["q", "k"], intermediate=True)),
    "loha_llama": ("loha", "llama", dict(r=4, alpha=8, rank_pattern={"k_proj": 2, "layers.1.self_attn.v_proj": 8},
                                         alpha_pattern={"down_proj": 12}),
                   ["q_proj", "k_proj", "v_proj", "down_proj"], dict(attn_matrices=["q", "k", "v"], output=True)),
    "lokr_llama": ("lokr", "llama", dict(r=2, alpha=4, rank_pattern={"q_proj": 8, "layers.0.mlp.down_proj": 1},
                                         alpha_pattern={"layers.1.self_attn.k_proj": 7}),
                   ["q_proj", "k_proj", "down_proj"], dict(attn_matrices=["q", "k"], output=True)),
}


def _peft(case, seed=0):
    method, arch, fields, targets, _ = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(archs.model(arch), PEFT[method][0](target_modules=targets, **fields)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in FACTOR_NAMES):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _ours(case):
    method, arch, fields, _, targets = CASES[case]
    model = adapterkit.init(archs.model(arch))
    model.add_adapter("a", config=PEFT[method][1](**fields, **targets), set_active=True)
    return model


def _out(model, inputs):
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _peft_layers(model) -> dict:
    """module name -> ({factor name: shape}, scaling) of a peft LoHa / LoKr model."""
    layers = {}
    for n, m in model.named_modules():
        if isinstance(m, (peft.tuners.loha.LoHaLayer, peft.tuners.lokr.LoKrLayer)):
            shapes = {k: tuple(getattr(m, k)["default"].shape) for k in m.adapter_layer_names
                      if "default" in getattr(m, k)}
            layers[n.removeprefix("base_model.model.")] = (shapes, m.scaling["default"])
    return layers


def _our_layers(model) -> dict:
    state = model.adapter_state
    names = {id(m): n for n, m in model.named_modules()}
    return {names[id(state.sites[key].target.module)]: ({k: tuple(p.shape) for k, p in m.named_parameters()},
                                                         m.scaling)
            for key, m in state.layer_modules("a")}


def _same_layers(mine: dict, theirs: dict) -> None:
    assert mine.keys() == theirs.keys()
    for name, (shapes, scaling) in theirs.items():
        assert mine[name][0] == shapes, name
        assert mine[name][1] == pytest.approx(scaling, rel=1e-12), name


@pytest.mark.parametrize("case", sorted(CASES))
def test_shapes_and_scalings_are_peft_s(case):
    theirs = _peft_layers(_peft(case))
    mine = _our_layers(_ours(case))
    _same_layers(mine, theirs)
    method, arch, fields, _, targets = CASES[case]
    plain_fields = {k: v for k, v in fields.items() if not k.endswith("_pattern")}
    plain = adapterkit.init(archs.model(arch))
    plain.add_adapter("a", config=PEFT[method][1](**plain_fields, **targets))
    plain = _our_layers(plain)
    assert any(plain[n][0] != mine[n][0] for n in mine)  # the patterns gave some modules other factors
    assert any(plain[n][1] != mine[n][1] for n in mine)  # and some another scaling


@pytest.mark.parametrize("case", sorted(CASES))
def test_peft_saved_directory_loads_with_peft_s_outputs(case, tmp_path):
    method, arch, fields, _, targets = CASES[case]
    peft_model = _peft(case)
    inputs = archs.inputs(arch)
    expected = _out(peft_model, inputs)
    peft_model.save_pretrained(tmp_path)
    model = adapterkit.init(archs.model(arch))
    model.load_adapter(tmp_path, load_as="p", set_active=True)
    config = model.adapters_config["p"]
    assert type(config) is PEFT[method][1]
    assert (config.rank_pattern, config.alpha_pattern) == (fields["rank_pattern"], fields["alpha_pattern"])
    with adapterkit.AdapterSetup(None):
        assert (_out(model, inputs) - expected).abs().max() > 1e-2  # the adapter matters
    assert (_out(model, inputs) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("case", sorted(CASES))
def test_our_export_loads_in_peft_with_our_outputs_and_round_trips(case, tmp_path):
    arch = CASES[case][1]
    model = _ours(case)
    randomise(model.adapterkit["a"])
    inputs = archs.inputs(arch)
    expected = _out(model, inputs)
    model.save_adapter(tmp_path / "peft", "a", format="peft")
    saved = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (saved["rank_pattern"], saved["alpha_pattern"]) == (CASES[case][2]["rank_pattern"],
                                                               CASES[case][2]["alpha_pattern"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.PeftModel.from_pretrained(archs.model(arch), tmp_path / "peft").eval()
    assert (_out(peft_model, inputs) - expected).abs().max() <= ATOL
    _same_layers(_our_layers(model), _peft_layers(peft_model))
    back = adapterkit.init(archs.model(arch))
    back.load_adapter(tmp_path / "peft", load_as="a", set_active=True)
    assert torch.equal(_out(back, inputs), expected)
    model.save_adapter(tmp_path / "native", "a")
    again = adapterkit.init(archs.model(arch))
    again.load_adapter(tmp_path / "native", set_active=True)
    assert again.adapters_config["a"] == model.adapters_config["a"]
    assert torch.equal(_out(again, inputs), expected)


@pytest.mark.parametrize("case", ["lokr_llama", "loha_bert"])
def test_merge_and_reset_with_patterns(case):
    model = _ours(case)
    randomise(model.adapterkit["a"])
    inputs = archs.inputs(CASES[case][1])
    expected = _out(model, inputs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.merge_adapter("a")
    assert (_out(model, inputs) - expected).abs().max() <= ATOL
    model.reset_adapter("a")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(_out(model, inputs), expected)


def test_order_dependent_patterns_are_stored_order_free(tmp_path):
    """Two keys matching one module with different values: the first wins (peft's rule), and the stored config
    says so per module, since the order is lost in sorted JSON."""
    config = LoHaConfig(r=4, attn_matrices=["q", "k"], rank_pattern={r"layer\.0\..*": 3, "key": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peft.get_peft_model(archs.model("bert"), peft.LoHaConfig(
            r=4, target_modules=["query", "key"], rank_pattern={r"layer\.0\..*": 3, "key": 5}))
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("a", config=config)
    assert model.adapters_config["a"].rank_pattern == {
        r"^encoder\.layer\.0\.attention\.self\.query": 3, r"^encoder\.layer\.0\.attention\.self\.key": 3,
        r"^encoder\.layer\.1\.attention\.self\.key": 5}
    _same_layers(_our_layers(model), _peft_layers(theirs))
    model.save_adapter(tmp_path, "a", format="peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = peft.PeftModel.from_pretrained(archs.model("bert"), tmp_path)
    _same_layers(_our_layers(model), _peft_layers(reloaded))


def test_a_key_matching_nothing_warns_as_peft():
    model = adapterkit.init(archs.model("bert"))
    with pytest.warns(RuntimeWarning, match=r"alpha_pattern keys did not match any adapted module.*nothing_here"):
        model.add_adapter("a", config=LoKrConfig(r=2, rank_pattern={"query": 1}, alpha_pattern={"nothing_here": 4}))
    assert {m.scaling for _, m in model.adapter_state.layer_modules("a")} == {8.0, 4.0}  # query: alpha 8 / r 1; the rest 8 / 2


@pytest.mark.parametrize("cls", [LoHaConfig, LoKrConfig])
@pytest.mark.parametrize("fields,message", [
    ({"rank_pattern": {"query": 0}}, r"rank_pattern\['query'\]=0 must be an integer >= 1"),
    ({"rank_pattern": {"query": -2}}, r"rank_pattern\['query'\]=-2 must be an integer >= 1"),
    ({"rank_pattern": {"query": 2.5}}, r"rank_pattern\['query'\]=2.5 must be an integer"),
    ({"rank_pattern": {"query": True}}, r"rank_pattern\['query'\]=True must be an integer"),
    ({"alpha_pattern": {"value": 0}}, r"alpha_pattern\['value'\]=0 must be a finite number > 0"),
    ({"alpha_pattern": {"value": float("nan")}}, r"alpha_pattern\['value'\]=nan must be a finite number > 0"),
    ({"rank_pattern": {"(": 2}}, r"rank_pattern key '\(' is not a valid regular expression"),
    ({"rank_pattern": {"": 2}}, "rank_pattern key '' must be a non-empty string"),
    ({"rank_pattern": ["query"]}, r"rank_pattern=\['query'\] must be a mapping of module-name patterns to ranks"),
])
def test_bad_patterns_are_named(cls, fields, message):
    with pytest.raises(AdapterConfigError, match=cls.__name__ + r"\." + message):
        cls(**fields)


def test_patterns_round_trip_through_the_config_dict_and_string():
    config = LoKrConfig(rank_pattern={"query": 2}, alpha_pattern={"value": 3.0})
    assert adapterkit.AdapterConfig.from_dict(config.to_dict()) == config
    model = adapterkit.init(archs.model("bert"))
    model.add_adapter("a", config="loha[r=4,rank_pattern={'query': 2}]")
    shapes = {m.hada_w1_a.shape[1] for _, m in model.adapter_state.layer_modules("a")}
    assert shapes == {2, 4}


def test_fused_gpt2_parts_take_their_projection_s_pattern(tmp_path):
    """GPT-2's q / k / v are slices of one c_attn: a key naming it gives each part its r (the native format holds
    it; peft's LoHa / LoKr do not take Conv1D)."""
    model = adapterkit.init(archs.model("gpt2"))
    model.add_adapter("a", config=LoKrConfig(r=4, decompose_both=True, attn_matrices=["q", "k", "v"],
                                             rank_pattern={"h.0.attn.c_attn": 1}, alpha_pattern={"c_attn": 2}),
                      set_active=True)
    randomise(model.adapterkit["a"])
    layers = {key: m for key, m in model.adapter_state.layer_modules("a")}
    assert {key for key, m in layers.items() if not m.full_w1} == {(0, "attn_q"), (0, "attn_k"), (0, "attn_v")}
    assert {m.scaling for m in layers.values()} == {2.0, 0.5}
    inputs = archs.inputs("gpt2")
    expected = _out(model, inputs)
    model.save_adapter(tmp_path, "a")
    again = adapterkit.init(archs.model("gpt2"))
    again.load_adapter(tmp_path, set_active=True)
    assert torch.equal(_out(again, inputs), expected)


def test_linear_average_of_patterned_adapters():
    model = _ours("lokr_bert")
    model.add_adapter("b", config=model.adapters_config["a"])
    randomise(model.adapterkit["a"], seed=1)
    randomise(model.adapterkit["b"], seed=2)
    model.average_adapter("avg", ["a", "b"], weights=[0.25, 0.75])
    avg, a, b = (dict(model.adapterkit[n].named_parameters()) for n in ("avg", "a", "b"))
    assert avg.keys() == a.keys()
    assert all(torch.allclose(avg[k], 0.25 * a[k] + 0.75 * b[k]) for k in avg)
