"""Prefix tuning and its combinations (MAM, UniPELT, flat prefixes) on DeBERTa and DeBERTa-v2, and UniPELT on
GPT-2 (one LoRA gate with a head per matrix of the fused c_attn), equal the `adapters` package (fixtures:
tools/make_prefix_combo_fixtures.py on the base models of tools/make_arch_fixtures.py).

DeBERTa's disentangled attention computes its scores itself; adapterkit's prefixes reach it through hooks
(sites/own_attention.py): prefix keys get no relative-position bias, as in the package.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
from adapterkit.interfaces.deberta import DEBERTA_ADAPTERHUB_QKV
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub, state_dict_to_adapterhub

FIXTURES = Path(__file__).parent / "fixtures"
BASES = FIXTURES / "adapters_ref_archs"
CASES_DIR = FIXTURES / "adapters_ref_prefix_combos"
MANIFEST = json.loads((CASES_DIR / "manifest.json").read_text())
CASES = [(arch, case) for arch, entry in sorted(MANIFEST["archs"].items()) for case in entry["cases"]]


def _load(arch: str, case: str):
    config = config_from_adapterhub(json.loads((CASES_DIR / arch / case / "adapter_config.json").read_text()))
    base = getattr(transformers, MANIFEST["archs"][arch]["model_class"]).from_pretrained(
        BASES / arch / "base", attn_implementation="eager").eval()
    # the package slices DeBERTa's fused in_proj in [q | k | v] blocks (UniPELT's LoRA): its layout's interface
    model = adapterkit.init(base, interface=DEBERTA_ADAPTERHUB_QKV if arch == "deberta" else None)
    model.add_adapter(case, config=config)
    state = model.adapter_state
    weights = state_dict_from_adapterhub(load_file(CASES_DIR / arch / case / "adapter.safetensors"), case,
                                         state.interface, config, state=state)
    assert set(weights) == set(model.adapterkit[case].state_dict())
    model.adapterkit[case].load_state_dict(weights)
    model.set_active_adapters(case)
    return model


def test_fixtures_cover_mam_and_unipelt():
    assert CASES == [(arch, case) for arch in ("deberta", "deberta-v2")
                     for case in ("mam", "unipelt", "prefix_tuning_flat")] + [("gpt2", "unipelt")]


@pytest.mark.parametrize("arch,case", CASES)
def test_matches_adapters_package(arch, case):
    model = _load(arch, case)
    inputs = load_file(BASES / arch / "inputs.safetensors")
    expected = load_file(CASES_DIR / arch / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        with adapterkit.AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert (base - expected).abs().max() > 1e-3  # the adapter matters here
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["deberta", "deberta-v2"])
def test_each_row_alone_equals_the_padded_batch(arch):
    """Per-row routing with prefixes of different lengths pads them: each row equals that row run alone."""
    model = _load(arch, "mam")
    model.add_adapter("short", config="prefix_tuning[prefix_length=2,bottleneck_size=8]")
    torch.manual_seed(0)
    for p in model.adapterkit["short"].parameters():
        p.data.normal_(0, 0.2)
    inputs = load_file(BASES / arch / "inputs.safetensors")
    names = ["mam", "short", None]
    with torch.no_grad():
        batch = model(**inputs, adapter_names=names).last_hidden_state
        for row, name in enumerate(names):
            one = {k: v[row:row + 1] for k, v in inputs.items()}
            with adapterkit.AdapterSetup(name):
                alone = model(**one).last_hidden_state
            real = int(one["attention_mask"].sum())
            torch.testing.assert_close(batch[row:row + 1, :real], alone[:, :real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["deberta", "deberta-v2"])
def test_prefix_trains_and_detaches_cleanly(arch):
    model = _load(arch, "prefix_tuning_flat")
    inputs = load_file(BASES / arch / "inputs.safetensors")
    with adapterkit.AdapterSetup(None), torch.no_grad():
        base = model(**inputs).last_hidden_state
    model.train_adapter("prefix_tuning_flat")
    model(**inputs).last_hidden_state.pow(2).mean().backward()
    grads = [p.grad for p in model.adapterkit["prefix_tuning_flat"].parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    model.delete_adapter("prefix_tuning_flat")
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).last_hidden_state, base)
    attention = model.encoder.layer[0].attention.self
    assert not attention._forward_hooks and not attention._forward_pre_hooks
    assert not any(name.startswith("disentangled") for name in vars(attention))


@pytest.mark.parametrize("arch,case", CASES)
def test_export_writes_the_package_checkpoint_back(arch, case):
    """The AdapterHub export gives the package's own keys and tensors (GPT-2 / DeBERTa: one gate, a head per
    fused matrix)."""
    model = _load(arch, case)
    state = model.adapter_state
    exported = state_dict_to_adapterhub(model.adapterkit[case].state_dict(), case, state.interface,
                                        state.configs[case], state)
    reference = load_file(CASES_DIR / arch / case / "adapter.safetensors")
    assert set(exported) == set(reference)
    for key, tensor in reference.items():
        assert torch.equal(exported[key], tensor), key
