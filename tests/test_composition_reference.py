"""Composition blocks and AdapterFusion equal the `adapters` package's outputs (tools/make_composition_fixtures.py).

Each fixture: the tiny base model and padded inputs of tests/fixtures/adapters_ref/, randomised adapters (and
"trained-looking" fusion weights), a setup, and the reference's last_hidden_state (and fusion attentions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adapterkit
from adapterkit import composition
from adapterkit.configs import PrefixTuningConfig
from adapterkit.io import (config_from_adapterhub, fusion_state_dict_from_adapterhub, fusion_state_dict_to_adapterhub,
                          state_dict_from_adapterhub)

import test_reference_archs
from test_reference_adapters import FIXTURES as BASE, load_base

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_ref_composition"
CASES = ["stack", "fuse_dynamic", "fuse_static", "fuse_then_stack", "split", "batch_split", "parallel",
         "stack_parallel", "lora_batch_split", "prefix_single", "prefix_batch_split", "prefix_parallel"]
ARCHS = ["bert", "roberta"]
# Models whose layers add the residual themselves (sublayer-hook sites: GPT-2, Llama pre-LN; BART post-LN and T5
# pre-LN encoder-decoders); bottleneck / fusion cases on tests/fixtures/adapters_ref_archs/<arch>'s base model and inputs
SUBLAYER_ARCHS = ["gpt2", "llama", "bart", "t5"]
SUBLAYER_CASES = ["stack", "fuse_dynamic", "fuse_static", "fuse_then_stack", "split", "batch_split", "parallel",
                  "stack_parallel"]
SKIPPED = {("bart", "split"), ("t5", "split")}  # its positions fit the encoder input, not the 5-token decoder's
# prefix composition where the package's prefix math is ours (its T5 prefix shifts the relative positions: adapterkit
# runs that, shift_positions=True, as a single adapter only)
PREFIX_CASES = ["prefix_single", "prefix_batch_split", "prefix_parallel"]
PREFIX_ARCHS = ["gpt2", "llama", "bart"]
RUNS = [(arch, case) for arch in ARCHS for case in CASES] + [
    (arch, case) for arch in SUBLAYER_ARCHS for case in SUBLAYER_CASES if (arch, case) not in SKIPPED] + [
    (arch, case) for arch in PREFIX_ARCHS for case in PREFIX_CASES]


def _base(arch: str, attn: str = "eager"):
    return test_reference_archs.load_base(arch, attn) if arch in SUBLAYER_ARCHS else load_base(arch, attn)


def _inputs(arch: str) -> dict:
    fixtures = test_reference_archs.FIXTURES if arch in SUBLAYER_ARCHS else BASE
    return load_file(fixtures / arch / "inputs.safetensors")


def block_from_dict(data):
    """The anchors' `AdapterCompositionBlock.to_dict()` form as an adapterkit block."""
    if data["type"] == "single":
        return data["children"][0]
    cls = getattr(composition, data["type"])
    return cls(*[block_from_dict(c) for c in data["children"]], **data.get("kwargs", {}))


def _adapter_config(data: dict):
    if data.get("architecture") == "prefix_tuning":  # the AdapterHub converter reads bottleneck / LoRA configs only
        fields = {k: v for k, v in data.items() if k not in ("architecture", "init_weights_seed")}
        return PrefixTuningConfig(**fields)
    return config_from_adapterhub(data)


def _adapter_weights(weights: dict, name: str, model, config) -> dict:
    mine = {k: v for k, v in weights.items() if f".{name}." in k and ".adapter_fusion_layer." not in k}
    return state_dict_from_adapterhub(mine, name, model.adapter_state.interface, config, state=model.adapter_state)


def build(arch: str, case: str, attn: str = "eager"):
    """The fixture's model with its adapters, fusions and weights, the setup active."""
    model = adapterkit.init(_base(arch, attn))
    spec = json.loads((FIXTURES / arch / case / "setup.json").read_text())
    weights = load_file(FIXTURES / arch / case / "weights.safetensors")
    used = 0
    for name, data in spec["adapters"].items():
        config = _adapter_config(data)
        model.add_adapter(name, config=config)
        state = _adapter_weights(weights, name, model, config)
        ours = model.adapterkit[name].state_dict()
        assert set(state) == set(ours), set(state) ^ set(ours)
        model.adapterkit[name].load_state_dict(state)
        used += len(state)
    for name, fusion in spec["fusions"].items():
        model.add_adapter_fusion(fusion["adapter_names"], config=fusion["config"], name=name)
        hub = {k: v for k, v in weights.items() if f".adapter_fusion_layer.{name}." in k}
        model.adapterkit_fusion[name].load_state_dict(
            fusion_state_dict_from_adapterhub(hub, name, model.adapter_state.interface, model.adapter_state))
        used += len(hub)
    assert used == len(weights)  # every reference parameter found its place
    model.set_active_adapters(block_from_dict(spec["setup"]))
    return model


def test_fixture_set_is_complete():
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    assert set(manifest["archs"]) == {*ARCHS, *SUBLAYER_ARCHS}
    for arch in ARCHS:
        assert set(manifest["archs"][arch]) == set(CASES)
    for arch in SUBLAYER_ARCHS:
        assert set(manifest["archs"][arch]) == {case for case in SUBLAYER_CASES if (arch, case) not in SKIPPED} | (
            set(PREFIX_CASES) if arch in PREFIX_ARCHS else set())


@pytest.mark.parametrize("arch,case", RUNS)
def test_matches_adapters_package(arch, case):
    model = build(arch, case)
    inputs = _inputs(arch)
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")
    with torch.no_grad():
        out = model(**inputs, output_adapter_fusion_attentions=True)
    torch.testing.assert_close(out.last_hidden_state, expected["last_hidden_state"], atol=1e-5, rtol=0)
    attentions = {f"fusion_attentions.{layer}.{location}": torch.from_numpy(value)
                  for fusion in out.adapter_fusion_attentions.values()
                  for layer, locations in fusion.items() for location, value in locations.items()}
    assert set(attentions) == {k for k in expected if k.startswith("fusion_attentions.")}
    for key, value in attentions.items():
        torch.testing.assert_close(value, expected[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["fuse_dynamic", "parallel", "prefix_batch_split"])
def test_matches_with_sdpa(case):
    model = build("bert", case, attn="sdpa")
    inputs = load_file(BASE / "bert" / "inputs.safetensors")
    expected = load_file(FIXTURES / "bert" / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, expected, atol=1e-5, rtol=0)


def test_loads_adapterhub_fusion_directory():
    """`save_adapter_fusion` output of the `adapters` package (pytorch_model_adapter_fusion.bin) loads and runs."""
    model = build("bert", "fuse_dynamic")
    model.delete_adapter_fusion("a,b")
    assert model.active_adapters is None  # the deleted fusion left the active setup
    name = model.load_adapter_fusion(FIXTURES / "bert" / "fuse_hub", set_active=True)
    assert name == "a,b" and model.active_adapters == adapterkit.Fuse("a", "b")
    inputs = load_file(BASE / "bert" / "inputs.safetensors")
    expected = load_file(FIXTURES / "bert" / "fuse_dynamic" / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, expected, atol=1e-5, rtol=0)


FUSION_RUNS = [(arch, case) for arch, case in RUNS if case.startswith("fuse")]


@pytest.mark.parametrize("arch,case", FUSION_RUNS)
def test_fusion_export_writes_the_package_weights_back(arch, case):
    """AdapterHub fusion export of the imported reference fusion gives the package's keys and tensors back."""
    model = build(arch, case)
    reference = {k: v for k, v in load_file(FIXTURES / arch / case / "weights.safetensors").items()
                 if ".adapter_fusion_layer." in k}
    exported = {}
    for name, fusion in model.adapterkit_fusion.items():
        exported.update(fusion_state_dict_to_adapterhub(fusion.state_dict(), name, model.adapter_state.interface,
                                                        model.adapter_state))
    assert set(exported) == set(reference), set(exported) ^ set(reference)
    assert all(torch.equal(exported[k], v) for k, v in reference.items())


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_fusion_saved_in_adapterhub_format_loads_back(arch, tmp_path):
    model = build(arch, "fuse_dynamic")
    inputs = _inputs(arch)
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
    model.save_adapter_fusion(tmp_path, ["a", "b"], format="adapterhub")
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_fusion_config.json", "model_adapter_fusion.safetensors"}
    model.delete_adapter_fusion("a,b")
    assert model.load_adapter_fusion(tmp_path, set_active=True) == "a,b"
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, expected, atol=0, rtol=0)
    with pytest.raises(adapterkit.AdapterError, match="unknown AdapterFusion format 'hub'; allowed: adapterkit, "
                                                      "adapterhub"):
        model.save_adapter_fusion(tmp_path / "x", ["a", "b"], format="hub")
