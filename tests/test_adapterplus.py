"""AdapterPlus (`adapterplus`, AdapterPlusConfig) and stochastic depth on bottleneck adapters, against the
`adapters` 1.3.0 package (tools/make_plus_fixtures.py): eval outputs, and training outputs under the same seed
(the package's torchvision StochasticDepth draws one Bernoulli per batch row, so do we)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adapterkit
from adapterkit import AdapterPlusConfig, BnConfig, SeqBnConfig, resolve_config
from adapterkit.errors import AdapterConfigError
from adapterkit.nn.drop_path import DropPath

import archs
from plus_fixtures import ARCHS, MANIFEST, case_model, expected, package_config, run
from test_reference_adapters import load_base

# fixture case -> our config for it, by name
OURS = {"adapterplus": lambda: resolve_config("adapterplus"),
        "adapterplus_rf4_sd05": lambda: resolve_config("adapterplus", reduction_factor=4, stochastic_depth=0.5),
        "seq_bn_rf4_sd03": lambda: SeqBnConfig(reduction_factor=4, stochastic_depth=0.3)}
SEEDS = [0, 1, 2, 3]


def test_adapterplus_has_the_package_defaults():
    config = resolve_config("adapterplus")
    assert isinstance(config, AdapterPlusConfig) and adapterkit.AdapterPlusConfig is AdapterPlusConfig
    assert config == package_config("bert", "adapterplus")  # every field, as the package's to_dict() wrote it
    assert (config.original_ln_before, config.original_ln_after, config.residual_before_ln) == (True, False, False)
    assert (config.scaling, config.init_weights, config.stochastic_depth) == ("channel", "houlsby", 0.1)
    assert (config.reduction_factor, config.non_linearity) == (96, "gelu")
    assert BnConfig().stochastic_depth == 0.0


@pytest.mark.parametrize("case", sorted(OURS))
@pytest.mark.parametrize("arch", ARCHS)
def test_eval_matches_package(arch, case):
    config = OURS[case]()
    assert config == package_config(arch, case)
    model = case_model(arch, case, config)
    out = run(model, arch)
    torch.testing.assert_close(out, expected(arch, case)["last_hidden_state"], atol=1e-5, rtol=0)
    torch.testing.assert_close(run(model, arch), out, atol=0, rtol=0)  # eval: stochastic depth is the identity


@pytest.mark.parametrize("case", sorted(OURS))
@pytest.mark.parametrize("arch", ARCHS)
def test_training_matches_package_under_the_same_seed(arch, case):
    model = case_model(arch, case, OURS[case]()).train()
    ref = expected(arch, case)
    dropped = 0
    for seed in SEEDS:
        torch.manual_seed(seed)
        out = run(model, arch)
        torch.testing.assert_close(out, ref[f"train_seed_{seed}"], atol=1e-5, rtol=0)
        dropped += int(not torch.allclose(out, ref["last_hidden_state"], atol=1e-6))
    if config_p(case) >= 0.3:  # these seeds drop some row in some layer: the comparison above saw real draws
        assert dropped > 0


def config_p(case: str) -> float:
    return OURS[case]().stochastic_depth


def test_a_dropped_row_is_the_row_without_the_adapter_branch():
    """p close to 1: every row's branch is dropped (survivors would be scaled by 1/(1-p)): the layer's output is
    then `LN(h + x)` alone, as with the adapter's up-projection zeroed."""
    model = adapterkit.init(load_base("bert"))
    model.add_adapter("a", config=AdapterPlusConfig(reduction_factor=4, stochastic_depth=0.999999))
    model.set_active_adapters("a")
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.normal_(0, 0.3)
    eval_out = run(model, "bert")
    model.train()
    torch.manual_seed(0)
    trained = run(model, "bert")
    with torch.no_grad():
        for i in range(2):
            up = model.adapterkit.a.layers[str(i)].output_adapter.up
            up.weight.zero_()
            up.bias.zero_()
    torch.testing.assert_close(trained, run(model, "bert"), atol=1e-6, rtol=0)
    assert (trained - eval_out).abs().max() > 1e-2


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_path_rows_and_scaling(p):
    """torchvision's "row" semantics: a whole row is zeroed with probability p, the others scaled by 1/(1-p)."""
    module = DropPath(p).train()
    torch.manual_seed(0)
    x = torch.ones(20000, 3, 4)
    y = module(x)
    rows = y[:, 0, 0]
    assert torch.equal(y, rows[:, None, None].expand_as(y))  # one draw per row
    kept = rows != 0
    torch.testing.assert_close(rows[kept], torch.full_like(rows[kept], 1 / (1 - p)))
    assert abs((~kept).float().mean().item() - p) < 0.015
    assert torch.equal(module.eval()(x), x)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "bart", "gpt2", "llama", "t5", "vit"])
def test_adapterplus_runs_and_trains(arch):
    """original_ln_after=False also where the layer adds the residual and norms it in its own forward (DistilBERT,
    BART): that norm is skipped for the adapter's call (sites/residual.py)."""
    model = archs.model(arch)
    adapterkit.init(model)
    model.add_adapter("a", config="adapterplus[reduction_factor=4]", set_active=True)
    with torch.no_grad():
        for p in model.adapterkit.a.parameters():
            p.normal_(0, 0.3)
    model.train_adapter("a")
    out = model(**archs.inputs(arch))[0]
    out.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapterkit.a.parameters())
    model.eval()
    with torch.no_grad():
        out = model(**archs.inputs(arch))[0]
        model.set_active_adapters(None)
        assert (out - model(**archs.inputs(arch))[0]).abs().max() > 1e-3


ARCH_FIXTURES = Path(__file__).parent / "fixtures" / "adapters_plus_archs"
REF_ARCHS = Path(__file__).parent / "fixtures" / "adapters_ref_archs"


@pytest.mark.parametrize("arch", ["distilbert", "bart"])
def test_post_ln_layers_equal_the_package(arch):
    """tools/make_plus_arch_fixtures.py: the package's AdapterPlus on DistilBERT / BART, whose layers norm
    `sublayer + residual` inline."""
    import transformers
    from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub

    case = ARCH_FIXTURES / arch
    cls = getattr(transformers, json.loads((ARCH_FIXTURES / "manifest.json").read_text())["cases"][arch]["model_class"])
    model = adapterkit.init(cls.from_pretrained(REF_ARCHS / arch / "base", attn_implementation="eager").eval())
    config = config_from_adapterhub(json.loads((case / "adapter_config.json").read_text()))
    model.add_adapter("adapterplus", config=config, set_active=True)
    state = model.adapter_state
    weights = state_dict_from_adapterhub(load_file(case / "adapter.safetensors"), "adapterplus", state.interface,
                                         config, state=state)
    model.adapterkit["adapterplus"].load_state_dict(weights)
    inputs = load_file(REF_ARCHS / arch / "inputs.safetensors")
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    torch.testing.assert_close(out, load_file(case / "expected.safetensors")["last_hidden_state"], atol=1e-5, rtol=0)


def test_summary_row_equals_the_packages_on_roberta_base():
    from transformers import RobertaConfig, RobertaModel
    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    with torch.device("meta"):
        model = adapterkit.init(RobertaModel(config))
        model.add_adapter("adapterplus", config="adapterplus")
    rows = {row["name"]: row["#param"] for row in model.adapter_summary(as_dict=True)}
    package = MANIFEST["summary_roberta_base"]
    assert rows["adapterplus"] == package["adapterplus"]
    assert rows["Full model"] == package["full_model"]


def test_no_drop_path_module_without_stochastic_depth():
    model = adapterkit.init(load_base("bert"))
    model.add_adapter("a", config="seq_bn")
    assert model.adapterkit.a.layers["0"].output_adapter.drop_path is None


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.1", True, float("nan")])
def test_bad_stochastic_depth_is_refused(value):
    with pytest.raises(AdapterConfigError, match=r"AdapterPlusConfig.stochastic_depth=.* must be a finite number "
                                                 r">= 0.0 and < 1.0"):
        AdapterPlusConfig(stochastic_depth=value)


def test_adapterhub_round_trip_keeps_stochastic_depth(tmp_path):
    model = case_model("bert", "adapterplus_rf4_sd05", OURS["adapterplus_rf4_sd05"]())
    model.save_adapter(tmp_path, "adapterplus_rf4_sd05", format="adapterhub")
    loaded = adapterkit.init(load_base("bert"))
    name = loaded.load_adapter(tmp_path, set_active=True)
    assert loaded.adapters_config[name].stochastic_depth == 0.5
    torch.testing.assert_close(run(loaded, "bert"), expected("bert", "adapterplus_rf4_sd05")["last_hidden_state"],
                               atol=1e-5, rtol=0)
