"""VeRA (and DvoRA, VeRA + DoRA's magnitude) against the `adapters` package (fixtures made in one process by
tools/make_vera_fixtures.py, frozen pair included) and peft (in process, both directions); exact reloads (the
package's change outputs); GPT-2's fused c_attn and Llama's grouped-query k/v (where the package fails) train and
merge; summary counts; bad fields."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import peft  # a test dependency: these checks must run, never skip
import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
from adapterkit import AdapterConfigError, DvoRAConfig, VeraConfig

import archs
from ckpt_helpers import outputs

ATOL = 1e-5
FIXTURES = Path(__file__).parent / "fixtures"
VERA = FIXTURES / "adapters_vera"
MANIFEST = json.loads((VERA / "manifest.json").read_text())
CONFIGS = {"VeraConfig": VeraConfig, "DvoRAConfig": DvoRAConfig}
LOCATION = {"q": "attn_q", "k": "attn_k", "v": "attn_v"}
OURS = {"d": "vera_lambda_d", "b": "vera_lambda_b", "m": "magnitude.weight"}


# -- the `adapters` package -------------------------------------------------------------------------------
def _base(arch: str):
    if arch in ("bert", "roberta"):
        root = FIXTURES / "adapters_ref" / arch
        config = transformers.AutoConfig.from_pretrained(root / "base")
        config._attn_implementation = "eager"
        cls = transformers.BertModel if arch == "bert" else transformers.RobertaModel
        model = cls(config, add_pooling_layer=False)
        model.load_state_dict(load_file(root / "base" / "model.safetensors"), strict=False)
    else:
        root = FIXTURES / "adapters_ref_archs" / arch
        cls = transformers.GPT2Model if arch == "gpt2" else transformers.LlamaModel
        model = cls.from_pretrained(root / "base", attn_implementation="eager")
    return model.eval(), load_file(root / "inputs.safetensors")


REFERENCE = [(case, arch) for case, entry in MANIFEST["cases"].items() if entry["config_class"] in CONFIGS
             for arch in entry["archs"]]


def test_fixture_set_records_where_the_package_fails():
    refused = MANIFEST["refused"]
    assert {"gpt2/vera", "llama/vera", "bert/vera_ffn", "gpt2/dvora", "llama/dvora"} <= set(refused)  # fused Conv1D, GQA k/v, other widths
    assert "shape" in refused["llama/vera"] and "attn_key" in refused["gpt2/vera"]
    # its own save / reload changes the outputs: the frozen pair is not in its files
    assert min(MANIFEST["package_reload_diff"].values()) > 0.2
    assert sum(p.stat().st_size for p in VERA.rglob("*") if p.is_file()) < 400 * 1024


@pytest.mark.parametrize("case,arch", REFERENCE)
def test_equals_the_adapters_package(case, arch):
    entry = MANIFEST["cases"][case]
    model, inputs = _base(arch)
    model = adapterkit.init(model)
    model.add_adapter(case, config=CONFIGS[entry["config_class"]](**entry["kwargs"]), set_active=True)
    ref = load_file(VERA / arch / case / "tensors.safetensors")
    ours = {"shared.vera.vera_A": ref.pop("shared.lora_A"), "shared.vera.vera_B": ref.pop("shared.lora_B")}
    for key, tensor in ref.items():
        _, layer, matrix, what = key.split(".")
        ours[f"layers.{layer}.{LOCATION[matrix]}.{OURS.get(what, what)}"] = tensor
    model.adapterkit[case].load_state_dict(ours, strict=True)
    expected = load_file(VERA / arch / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    assert (out - expected).abs().max() <= ATOL
    assert entry["archs"][arch]["max_abs_diff_vs_base"] > 1e-2  # the adapter matters


# -- exact reload ----------------------------------------------------------------------------------------
def _randomised(arch: str, config, seed: int = 0):
    model = adapterkit.init(archs.model(arch))
    model.add_adapter("a", config=config, set_active=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapterkit["a"].parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("method", ["vera", "dvora"])
@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_reload_is_exact_in_a_fresh_model(arch, method, tmp_path):
    model = _randomised(arch, f"{method}[r=4,intermediate_lora=True]")
    expected = outputs(model, archs.inputs(arch))
    model.save_adapter(tmp_path, "a")
    torch.manual_seed(12345)  # other RNG state: a regenerated frozen pair would differ
    fresh = adapterkit.init(archs.model(arch))
    torch.rand(1000)
    fresh.load_adapter(tmp_path, set_active=True)
    assert torch.equal(outputs(fresh, archs.inputs(arch)), expected)
    # the file holds the frozen pair
    assert {"shared.vera.vera_A", "shared.vera.vera_B"} <= set(load_file(tmp_path / "adapter.safetensors"))


@pytest.mark.parametrize("method", ["vera", "dvora"])
def test_adapterhub_format_is_refused(method, tmp_path):
    model = _randomised("bert", method)
    with pytest.raises(AdapterConfigError, match="no exact AdapterHub form"):
        model.save_adapter(tmp_path / "x", "a", format="adapterhub")


def test_dvora_has_no_peft_form(tmp_path):
    model = _randomised("bert", "dvora")
    with pytest.raises(AdapterConfigError, match="DvoRA .* has no PEFT form"):
        model.save_adapter(tmp_path / "x", "a", format="peft")


def test_dvora_merge_writes_its_forward_where_the_package_merge_does_not():
    """alpha != r and biased projections: the package's merge (m (W + dW_u) / ||W + dW_u||) differs from its
    forward; ours equals it."""
    model = _randomised("bert", "dvora[r=4,alpha=16]")
    q = model.encoder.layer[0].attention.self.query
    with torch.no_grad():
        q.bias.normal_(0, 0.5)  # (the tiny model's biases start at 0)
    inputs = archs.inputs("bert")
    expected = outputs(model, inputs)
    module = model.adapterkit["a"].layers["0"]["attn_q"]
    w, bias = q.weight.detach().clone(), q.bias.detach().clone()
    with torch.no_grad():
        up, down = module.unscaled_factors()
        delta = up @ down
        package = module.magnitude.weight[:, None] * (w + delta) / torch.linalg.norm(w + delta, dim=1)[:, None]
    model.merge_adapter("a")
    assert (q.weight - package).abs().max() > 1e-3 and (q.bias - bias).abs().max() > 1e-4
    assert (outputs(model, inputs) - expected).abs().max() <= ATOL


# -- GPT-2 and grouped-query Llama: train and merge ------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("config", ["vera[r=4,attn_matrices=['q','k','v'],intermediate_lora=True,output_lora=True]",
                                    "dvora[r=4,alpha=8,attn_matrices=['q','k','v'],intermediate_lora=True]"])
def test_trains_and_merges_on_fused_and_grouped_query_projections(arch, config):
    model = adapterkit.init(archs.model(arch))
    model.add_adapter("a", config=config)
    model.train_adapter("a")
    inputs = archs.inputs(arch)
    target = torch.randn(outputs(model, inputs).shape, generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(model.adapterkit["a"].parameters(), lr=3e-2)
    losses = []
    for _ in range(15):
        loss = (model(**inputs).last_hidden_state - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1e-3
    shared = model.adapterkit["a"].shared["vera"]
    assert not any(p.requires_grad for p in shared.parameters()) and len(list(shared.buffers())) == 2
    model.eval()
    expected = outputs(model, inputs)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("adapterkit.")}
    model.merge_adapter("a")
    assert (outputs(model, inputs) - expected).abs().max() <= ATOL
    model.reset_adapter("a")
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert (outputs(model, inputs) - expected).abs().max() <= ATOL


def test_shared_pair_is_sized_to_the_largest_projection():
    model = adapterkit.init(archs.model("llama"))
    model.add_adapter("a", config="vera[r=4,attn_matrices=['k','v'],intermediate_lora=True,output_lora=True]")
    shared = model.adapterkit["a"].shared["vera"]
    assert tuple(shared.vera_A.shape) == (4, archs.FF) and tuple(shared.vera_B.shape) == (archs.FF, 4)
    k = model.adapterkit["a"].layers["0"]["attn_k"]
    assert k.vera_lambda_b.shape == (16,)  # 2 key/value heads of 8


# -- peft ------------------------------------------------------------------------------------------------
PEFT_TARGETS = {"bert": ["query", "value", "intermediate.dense"], "llama": ["k_proj", "v_proj", "down_proj"]}


def _peft_model(arch, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(archs.model(arch), peft.VeraConfig(target_modules=PEFT_TARGETS[arch], **kwargs))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vera_lambda" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("save_projection", [True, False])
def test_peft_made_adapter_loads_with_peft_outputs(arch, save_projection, tmp_path):
    peft_model = _peft_model(arch, r=4, save_projection=save_projection, projection_prng_key=7)
    inputs = archs.inputs(arch)
    with torch.no_grad():
        expected = peft_model(**inputs).last_hidden_state
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(tmp_path)
    model = adapterkit.init(archs.model(arch))
    name = model.load_adapter(tmp_path, load_as="p", set_active=True)
    assert isinstance(model.adapters_config[name], VeraConfig)
    with adapterkit.AdapterSetup(None):
        assert (outputs(model, inputs) - expected).abs().max() > 1e-2
    assert (outputs(model, inputs) - expected).abs().max() <= ATOL


@pytest.mark.parametrize("arch,config", [
    ("bert", "vera[r=4]"), ("bert", "vera[r=4,alpha=12,attn_matrices=['q','k','v','o'],intermediate_lora=True]"),
    ("llama", "vera[r=4,attn_matrices=['k','v'],output_lora=True,leave_out=[0]]"),
])
def test_export_loads_in_peft_with_our_outputs(arch, config, tmp_path):
    model = _randomised(arch, config)
    inputs = archs.inputs(arch)
    expected = outputs(model, inputs)
    model.save_adapter(tmp_path, "a", format="peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft.PeftModel.from_pretrained(archs.model(arch), tmp_path).eval()
    with torch.no_grad():
        assert (loaded(**inputs).last_hidden_state - expected).abs().max() <= ATOL


def test_peft_vera_on_a_fused_projection_loads_by_module_and_ours_is_refused(tmp_path):
    """peft's VeRA on GPT-2's whole c_attn loads as a module-targeted adapter (its outputs); ours on c_attn's q / v
    slices has no PEFT form (peft adapts the whole fused module)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = peft.get_peft_model(archs.model("gpt2"), peft.VeraConfig(r=4, target_modules=["c_attn"],
                                                                             init_weights=False))
        peft_model.save_pretrained(tmp_path / "peft")
    inputs = archs.inputs("gpt2")
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**inputs).last_hidden_state
    model = adapterkit.init(archs.model("gpt2"))
    name = model.load_adapter(tmp_path / "peft", set_active=True)
    assert model.adapters_config[name].target_modules
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, expected, atol=1e-5, rtol=0)
    model.add_adapter("a", config="vera")
    with pytest.raises(AdapterConfigError, match="slice of a fused projection"):
        model.save_adapter(tmp_path / "ours", "a", format="peft")


# -- counts and fields -----------------------------------------------------------------------------------
def test_summary_counts_on_roberta_base_shape():
    """The package counts the frozen pair (so do we) and its d / b as full (r, r) / (out, out) matrices; ours are
    the paper's vectors: per module r*r - r + out*out - out fewer."""
    config = transformers.RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                        layer_norm_eps=1e-5)
    with torch.device("meta"):
        model = adapterkit.init(transformers.RobertaModel(config))
        model.add_adapter("vera", config="vera")
        model.add_adapter("dvora", config="dvora")
    rows = {r["name"]: r for r in model.adapter_summary(as_dict=True)}
    package = MANIFEST["roberta_base_summary"]
    modules, r, out = 12 * 2, 8, 768
    fewer = modules * (r * r - r + out * out - out)
    assert rows["vera"]["#param"] == package["vera"]["#param"] - fewer == 30_912
    assert rows["dvora"]["#param"] == package["dvora"]["#param"] - fewer == 30_912 + modules * out
    assert rows["Full model"]["#param"] == package["Full model"]["#param"]


@pytest.mark.parametrize("fields,match", [
    ({"r": 0}, "r=0"), ({"vera_d": "x"}, "vera_d"), ({"vera_b": float("nan")}, "vera_b"),
    ({"vera_b": None}, "needs both vera_d and vera_b"), ({"init_weights": "lora"}, "init_weights='vera'"),
    ({"composition_mode": "scale", "r": 1}, "composition_mode='add'"),
])
def test_bad_fields_are_refused(fields, match):
    with pytest.raises(AdapterConfigError, match=match):
        VeraConfig(**fields)


def test_vera_init_needs_the_vera_fields():
    with pytest.raises(AdapterConfigError, match="init_weights='vera' is VeRA's"):
        adapterkit.LoRAConfig(init_weights="vera")


def test_starts_as_the_identity_and_copies_deeply():
    model = adapterkit.init(archs.model("bert"))
    before = outputs(model, archs.inputs("bert"))
    model.add_adapter("a", config="vera", set_active=True)
    assert torch.equal(outputs(model, archs.inputs("bert")), before)  # b starts at 0
    clone = copy.deepcopy(model)
    vera = clone.adapterkit["a"].layers["0"]["attn_q"]
    assert vera.__dict__["shared"] is clone.adapterkit["a"].shared["vera"]


# -- composition -----------------------------------------------------------------------------------------
def _two(arch="bert"):
    model = adapterkit.init(archs.model(arch))
    for i, config in enumerate(["vera[r=4]", "dvora[r=4,attn_matrices=['q','k','v']]"]):
        model.add_adapter(f"a{i}", config=config)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in model.adapterkit[f"a{i}"].parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _run(model, setup, inputs):
    model.set_active_adapters(setup)
    return outputs(model, inputs)


def test_batch_split_and_routing_give_each_row_its_adapter():
    from adapterkit import BatchSplit
    model, inputs = _two(), archs.inputs("bert", batch=2)
    alone = [_run(model, name, inputs)[row] for row, name in enumerate(["a0", "a1"])]
    split = _run(model, BatchSplit("a0", "a1", batch_sizes=1), inputs)
    for row in range(2):
        assert (split[row] - alone[row]).abs().max() <= 1e-6
    model.set_active_adapters(None)
    with torch.no_grad():
        routed = model(**inputs, adapter_names=["a0", "a1"]).last_hidden_state
    for row in range(2):
        assert (routed[row] - alone[row]).abs().max() <= 1e-6


def test_average_stack_and_parallel_run():
    from adapterkit import Average, Parallel, Stack
    model, inputs = _two(), archs.inputs("bert")
    plain = _run(model, None, inputs)
    a0 = _run(model, "a0", inputs)
    both = _run(model, Average("a0", "a1", weights=[0.5, 0.5]), inputs)
    assert (both - a0).abs().max() > 1e-3 and (both - plain).abs().max() > 1e-3
    assert (_run(model, Average("a0", weights=[1.0]), inputs) - a0).abs().max() <= 1e-6
    assert (_run(model, Stack("a0", "a1"), inputs) - plain).abs().max() > 1e-3
    out = _run(model, Parallel("a0", "a1"), inputs)
    assert out.shape[0] == 2 * inputs["input_ids"].shape[0]
    assert (out[: inputs["input_ids"].shape[0]] - a0).abs().max() <= 1e-5
