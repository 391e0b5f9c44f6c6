"""Our forward equals the `adapters` package's on fixtures it generated (tools/make_reference_fixtures.py).

Each fixture holds a tiny base model, randomised adapter weights (so identity inits hide nothing), inputs with
padding, and the reference's last_hidden_state.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, BertModel, RobertaModel

import adapterkit
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_ref"
CASES = ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "seq_bn_inv", "double_seq_bn_inv",
         "seq_bn_rf4_swish", "lora", "lora_qkv_ffn", "ia3", "ia3_attn_only",
         # tools/make_method_fixtures.py
         "prefix_tuning", "prefix_tuning_flat", "prefix_tuning_gated", "mam", "unipelt", "compacter", "compacter_pp",
         "seq_bn_gated", "lora_gated"]
# The anchors' gating-score locations -> ours (their "selfattn_lora" column-stacks q and v, in call order).
GATING_LOCATIONS = {"self_prefix": ["prefix"], "selfattn_lora": ["attn_q", "attn_v"], "output_adapter": ["output_adapter"]}
MODEL_CLASSES = {"bert": BertModel, "roberta": RobertaModel}


def load_base(arch: str, attn: str = "eager"):
    config = AutoConfig.from_pretrained(FIXTURES / arch / "base")
    config._attn_implementation = attn
    model = MODEL_CLASSES[arch](config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(load_file(FIXTURES / arch / "base" / "model.safetensors"),
                                                strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    return model.eval()


def test_fixture_set_is_complete():
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    assert set(manifest["archs"]) == set(MODEL_CLASSES)
    for arch in MODEL_CLASSES:
        for case in CASES:
            assert (FIXTURES / arch / case / "expected.safetensors").is_file(), (arch, case)


@pytest.mark.parametrize("arch", sorted(MODEL_CLASSES))
def test_base_model_matches(arch):
    model = load_base(arch)
    inputs = load_file(FIXTURES / arch / "inputs.safetensors")
    expected = load_file(FIXTURES / arch / "base" / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def reference_model(arch: str, case: str, attn: str = "eager"):
    """Our model with the case's adapter, its weights converted from the reference's names, active."""
    model = adapterkit.init(load_base(arch, attn))
    ref_config = json.loads((FIXTURES / arch / case / "adapter_config.json").read_text())
    config = config_from_adapterhub(ref_config)
    model.add_adapter(case, config=config)
    weights = state_dict_from_adapterhub(load_file(FIXTURES / arch / case / "adapter.safetensors"), case,
                                         model.adapter_state.interface, config)
    ours = model.adapterkit[case].state_dict()
    assert set(weights) == set(ours), set(weights) ^ set(ours)
    model.adapterkit[case].load_state_dict(weights)
    model.set_active_adapters(case)
    return model


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("arch", sorted(MODEL_CLASSES))
def test_matches_adapters_package(arch, case, attn):
    model = reference_model(arch, case, attn)
    inputs = load_file(FIXTURES / arch / "inputs.safetensors")
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        base = None
        with adapterkit.AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert (base - expected).abs().max() > 1e-3  # the adapter matters on this fixture
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["prefix_tuning_gated", "unipelt", "seq_bn_gated", "lora_gated"])
@pytest.mark.parametrize("arch", sorted(MODEL_CLASSES))
def test_gating_scores_match(arch, case):
    model = reference_model(arch, case)
    inputs = load_file(FIXTURES / arch / "inputs.safetensors")
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")
    with torch.no_grad():
        scores = model(**inputs, output_adapter_gating_scores=True).adapter_gating_scores[case]
    keys = [k for k in expected if k.startswith("gating.")]
    assert keys
    for key in keys:
        _, _, layer, location = key.split(".")
        ours = [torch.from_numpy(scores[int(layer)][loc]) for loc in GATING_LOCATIONS[location]]
        ours = torch.cat([o.reshape(o.shape[0], -1) for o in ours], dim=1)
        torch.testing.assert_close(ours.reshape(expected[key].shape), expected[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", sorted(MODEL_CLASSES))
def test_eject_matches_adapters_package(arch):
    model = reference_model(arch, "prefix_tuning")
    model.eject_prefix_tuning("prefix_tuning")
    ejected = load_file(FIXTURES / arch / "prefix_tuning" / "ejected.safetensors")
    flat = [v for k, v in ejected.items() if k != "last_hidden_state"]
    assert len(flat) == 1
    torch.testing.assert_close(model.adapterkit["prefix_tuning"].shared["prefix"].control_trans, flat[0].reshape(-1),
                               atol=1e-6, rtol=0)
    with torch.no_grad():
        out = model(**load_file(FIXTURES / arch / "inputs.safetensors")).last_hidden_state
    torch.testing.assert_close(out, ejected["last_hidden_state"], atol=1e-5, rtol=0)
