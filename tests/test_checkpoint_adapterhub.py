"""AdapterHub-format directories written by the real `adapters` package load and match its outputs (1e-5).

Fixtures: tests/fixtures/adapterhub/, made by tools/make_adapterhub_fixtures.py with `model.save_adapter` of
adapters 1.3.0 (both the older pytorch_adapter.bin and the adapter.safetensors variants, some with a head).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import adapterkit
import adapterkit.interfaces.deberta
from adapterkit import CheckpointError
from adapterkit.errors import AdapterConfigError

from test_reference_adapters import load_base

FIXTURES = Path(__file__).parent / "fixtures" / "adapterhub"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
VARIANTS = [(arch, case, variant) for arch, cases in sorted(MANIFEST["cases"].items())
            for case, info in sorted(cases.items()) for variant in info["variants"]]
INPUTS = {arch: load_file(Path(__file__).parent / "fixtures" / "adapters_ref" / arch / "inputs.safetensors")
          for arch in MANIFEST["cases"]}


def run(model, arch):
    with torch.no_grad():
        return model(**INPUTS[arch]).last_hidden_state


def test_fixture_set_covers_methods_and_both_weight_files():
    assert {v for *_, v in VARIANTS} == {"bin", "safetensors"}
    assert {case for _, case, _ in VARIANTS} >= {"seq_bn", "double_seq_bn_inv", "scaled_par_bn", "lora", "ia3"}
    for arch, case, variant in VARIANTS:
        files = {p.name for p in (FIXTURES / arch / case / variant).iterdir()}
        assert files >= {"adapter_config.json", "pytorch_adapter.bin" if variant == "bin" else "adapter.safetensors"}


@pytest.mark.parametrize("arch,case,variant", VARIANTS)
def test_adapters_package_checkpoint_matches_its_outputs(arch, case, variant):
    model = adapterkit.init(load_base(arch))
    name = model.load_adapter(FIXTURES / arch / case / variant, set_active=True)
    assert name == case
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")["last_hidden_state"]
    out = run(model, arch)
    with adapterkit.AdapterSetup(None):
        assert (run(model, arch) - expected).abs().max() > 1e-3  # the adapter matters here
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_format_is_detected_and_can_be_forced():
    path = FIXTURES / "bert" / "lora" / "safetensors"
    model = adapterkit.init(load_base("bert"))
    assert model.load_adapter(path, format="adapterhub", load_as="x") == "x"
    with pytest.raises(CheckpointError, match="is in adapterhub format, not adapterkit"):
        model.load_adapter(path, format="adapterkit", load_as="y")


def _copy(tmp_path, arch, case, variant):
    target = tmp_path / case
    shutil.copytree(FIXTURES / arch / case / variant, target)
    return target


def _expect_same_outputs(path, arch, case, **kwargs):
    model = adapterkit.init(load_base(arch))
    name = model.load_adapter(path, set_active=True, **kwargs)
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")["last_hidden_state"]
    torch.testing.assert_close(run(model, arch), expected, atol=1e-5, rtol=0)
    return model, name


def test_adapter_transformers_3x_config_form(tmp_path):
    """3.x wrote `architecture: null` for bottleneck adapters, a bare version and no 1.x-only fields."""
    path = _copy(tmp_path, "bert", "seq_bn", "bin")
    data = json.loads((path / "adapter_config.json").read_text())
    for key in ("dropout", "init_weights_seed", "stochastic_depth", "shared_W_phm", "factorized_phm_W"):
        data["config"].pop(key, None)
    data["config"]["architecture"] = None
    data["version"] = "3.2.1"
    (path / "adapter_config.json").write_text(json.dumps(data))
    _expect_same_outputs(path, "bert", "seq_bn")


def test_adapter_transformers_2x_weight_names(tmp_path):
    path = _copy(tmp_path, "bert", "seq_bn", "safetensors")
    weights = load_file(str(path / "adapter.safetensors"))
    renamed = {k.replace("output.adapters.", "output.layer_text_task_adapters."): v for k, v in weights.items()}
    assert renamed.keys() != weights.keys()
    save_file(renamed, str(path / "adapter.safetensors"))
    _expect_same_outputs(path, "bert", "seq_bn")


def test_lora_from_adapters_before_1_1_runs_with_alpha_equal_r(tmp_path):
    """adapters < 1.1.0 ran LoRA with scaling 1 whatever alpha said; `adapters` fixes alpha := r on load."""
    path = _copy(tmp_path, "bert", "lora", "safetensors")
    data = json.loads((path / "adapter_config.json").read_text())
    assert data["config"]["r"] != data["config"]["alpha"]
    data["version"] = "adapters.1.0.1"
    (path / "adapter_config.json").write_text(json.dumps(data))
    model = adapterkit.init(load_base("bert"))
    with pytest.warns(UserWarning, match="ran with alpha == r"):
        model.load_adapter(path)
    assert model.adapters_config["lora"].alpha == data["config"]["r"]


def test_unsupported_adapterhub_features_are_refused(tmp_path):
    path = _copy(tmp_path, "bert", "seq_bn", "safetensors")
    data = json.loads((path / "adapter_config.json").read_text())
    data["config"]["dtype"] = "float16"
    (path / "adapter_config.json").write_text(json.dumps(data))
    model = adapterkit.init(load_base("bert"))
    with pytest.raises(CheckpointError, match="adapter_config.json: invalid adapter config: AdapterHub config sets "
                                              "'dtype'"):
        model.load_adapter(path)
    assert model.adapters_config == {}


def test_checkpoint_with_head_loads_its_adapter_without_a_heads_module():
    """Heads are loaded by adapterkit.heads.io when it exists; without it the adapter still loads, head skipped."""
    path = FIXTURES / "bert" / "seq_bn_head" / "bin"
    assert (path / "head_config.json").is_file() and (path / "pytorch_model_head.bin").is_file()
    _expect_same_outputs(path, "bert", "seq_bn_head")


def test_old_task_adapter_naming_an_invertible_adapter_it_does_not_have(tmp_path):
    """Old AdapterHub task adapters ("type": "text_task") named an invertible adapter without weights for it;
    like `adapters`, drop it. Without that marker, the missing weights are an error."""
    path = _copy(tmp_path, "bert", "seq_bn", "safetensors")
    data = json.loads((path / "adapter_config.json").read_text())
    data["config"].update(inv_adapter="nice", inv_adapter_reduction_factor=2)
    (path / "adapter_config.json").write_text(json.dumps(data))
    model = adapterkit.init(load_base("bert"))
    with pytest.raises(CheckpointError, match="adapter.safetensors: does not match .*missing weights: "
                                              "shared.invertible.F.0.bias"):
        model.load_adapter(path)
    (path / "adapter_config.json").write_text(json.dumps({**data, "type": "text_task"}))
    model, name = _expect_same_outputs(path, "bert", "seq_bn")
    assert model.adapters_config[name].inv_adapter is None


@pytest.mark.parametrize("config", ["prefix_tuning", "prefix_tuning_flat",
                                    "prefix_tuning[prefix_length=7,bottleneck_size=16,leave_out=[1]]"])
def test_prefix_tuning_exports_to_adapterhub_and_back(config, tmp_path):
    """Ungated prefix tuning writes the `adapters` pool's keys (prefix_tuning.prefix_tunings.<name>.self_prefix.*;
    the real package loads them: tests/test_checkpoint_adapterhub_export.py) and reads back bit for bit."""
    from ckpt_helpers import randomise
    model = adapterkit.init(load_base("bert"))
    model.add_adapter("p", config=config, set_active=True)
    randomise(model.adapterkit["p"], seed=3)
    model.save_adapter(tmp_path / "p", "p", format="adapterhub")
    keys = load_file(str(tmp_path / "p" / "adapter.safetensors")).keys()
    assert keys and all(k.startswith("prefix_tuning.prefix_tunings.p.self_prefix.") for k in keys)
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["config"]["architecture"] == "prefix_tuning"
    again = adapterkit.init(load_base("bert"))
    again.load_adapter(tmp_path / "p", set_active=True)
    torch.testing.assert_close(run(again, "bert"), run(model, "bert"), atol=0, rtol=0)


@pytest.mark.parametrize("arch,config", [
    ("bert", "prefix_tuning[prefix_length=3,bottleneck_size=8,use_gating=True,shared_gating=False]"),
    ("bart", "prefix_tuning[prefix_length=3,bottleneck_size=8,use_gating=True]"),
    ("bart", "seq_bn_inv[cross_adapter=True]"),
    ("bart", "lora[attn_matrices=['q','k','v'],intermediate_lora=True,output_lora=True]"),
    ("t5", "double_seq_bn[cross_adapter=True]"),
    ("t5", "ia3"),
])
def test_gated_prefix_and_encoder_decoder_adapters_export_and_read_back(arch, config, tmp_path):
    """Gated prefix tuning and encoder-decoder models (both stacks, cross-attention sites and prefixes) export
    to AdapterHub's names (checked key by key against the package's own checkpoints in test_reference_archs.py)
    and read back bit for bit."""
    from archs import inputs, randomised
    from archs import model as arch_model
    model = randomised(arch, {"a": config})
    model.set_active_adapters("a")
    model.save_adapter(tmp_path / "a", "a", format="adapterhub")
    keys = load_file(str(tmp_path / "a" / "adapter.safetensors")).keys()
    if model.config.is_encoder_decoder:
        assert any(k.startswith(("encoder.", "prefix_tuning.")) for k in keys)
        assert any(k.startswith("decoder.") for k in keys)
    again = adapterkit.init(arch_model(arch))
    again.load_adapter(tmp_path / "a", set_active=True)
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs(arch)).last_hidden_state, model(**inputs(arch)).last_hidden_state,
                                   atol=0, rtol=0)


def test_per_head_fused_projections_have_no_adapterhub_form(tmp_path):
    """adapterkit splits DeBERTa's in_proj per head, AdapterHub into three blocks: refused both ways, naming the
    interface with AdapterHub's layout (with it, the package's checkpoints load: test_reference_archs.py)."""
    from archs import model as arch_model
    model = adapterkit.init(arch_model("deberta"))
    model.add_adapter("l", config="lora")
    with pytest.raises(AdapterConfigError, match="per-head slice of the fused projection .*DEBERTA_ADAPTERHUB_QKV"):
        model.save_adapter(tmp_path / "l", "l", format="adapterhub")
    assert not (tmp_path / "l").exists()
    qkv = adapterkit.init(arch_model("deberta"), interface=adapterkit.interfaces.deberta.DEBERTA_ADAPTERHUB_QKV)
    qkv.add_adapter("l", config="lora")
    qkv.save_adapter(tmp_path / "l", "l", format="adapterhub")
    with pytest.raises(CheckpointError, match="per-head slice of the fused projection"):
        model.load_adapter(tmp_path / "l", load_as="again")


def test_gated_t5_ffn_lora_has_no_adapterhub_equivalent(tmp_path):
    """The `adapters` package puts gated T5's intermediate LoRA on wi_1 alone (ours: wi_0 and wi_1): refused both
    ways, naming why; plain T5's FFN LoRA converts (test_reference_archs.py)."""
    from archs import model as arch_model
    from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub
    model = adapterkit.init(arch_model("t5-gated"))
    model.add_adapter("a", config="lora[intermediate_lora=True]")
    with pytest.raises(AdapterConfigError, match="'intermediate_1' projections have an AdapterHub namesake on "
                                                 "another module .*wi_1 alone"):
        model.save_adapter(tmp_path / "a", "a", format="adapterhub")
    # what the package writes: LoRA on wi_1 only
    hub = {f"{stack}.block.{i}.layer.{ffn}.DenseReluDense.wi_1.loras.a.{p}": torch.zeros(2, 2)
           for stack, ffn in (("encoder", 1), ("decoder", 2)) for i in range(2) for p in ("lora_A", "lora_B")}
    config = config_from_adapterhub({"architecture": "lora", "intermediate_lora": True})
    with pytest.raises(AdapterConfigError, match=r"has intermediate LoRA / \(IA\)\^3 on other projections .*wi_1 "
                                                 "alone"):
        state_dict_from_adapterhub(hub, "a", model.adapter_state.interface, config, state=model.adapter_state)
    plain = adapterkit.init(arch_model("t5"))
    plain.add_adapter("a", config="lora[intermediate_lora=True]")
    plain.save_adapter(tmp_path / "plain", "a", format="adapterhub")  # no wi_1 there: nothing differs


def test_llama_ffn_projections_have_no_adapterhub_equivalent(tmp_path):
    """The `adapters` package puts Llama's "intermediate" LoRA on down_proj (ours: up and gate): our new adapters
    refuse to export there, naming why; the package's own checkpoints load with its placement
    (test_reference_placement.py)."""
    from archs import model as arch_model
    llama = adapterkit.init(arch_model("llama"))
    llama.add_adapter("s", config="ia3")  # key, value and the intermediate projections
    with pytest.raises(AdapterConfigError, match="'intermediate' projections have an AdapterHub namesake on another"):
        llama.save_adapter(tmp_path / "s", "s", format="adapterhub")
    assert not (tmp_path / "s").exists()
    llama.add_adapter("q", config="ia3[intermediate_lora=False]")
    llama.save_adapter(tmp_path / "q", "q", format="adapterhub")
    assert (tmp_path / "q" / "adapter.safetensors").exists()
    data = json.loads((tmp_path / "q" / "adapter_config.json").read_text())
    data["config"]["intermediate_lora"] = True  # as the `adapters` package's default IA3 on Llama
    (tmp_path / "q" / "adapter_config.json").write_text(json.dumps(data))
    loaded = adapterkit.init(arch_model("llama"))
    name = loaded.load_adapter(tmp_path / "q", format="adapterhub")  # the package's placement: module-targeted
    assert all(t.endswith(("k_proj", "v_proj")) for t in loaded.adapters_config[name].target_modules)
