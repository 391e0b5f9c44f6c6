"""X-MOD against the `adapters` package: its files (tools/make_xmod_fixtures.py, an X-MOD without language adapters
of its own, as AdapterHub's xmod-base) load through `load_adapter` with the named interface and give its
last_hidden_state within 1e-5 for bottleneck adapters, invertible, LoRA, FFN LoRA, (IA)^3 and prefix tuning. An
X-MOD with its own language adapters keeps them: it gets an inferred interface, and an added adapter that is not
active leaves its outputs as they were."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
from adapterkit.interfaces.xmod import XmodInterface

FX = Path(__file__).parent / "fixtures" / "adapters_ref_xmod"
MANIFEST = json.loads((FX / "manifest.json").read_text())
CASES = sorted(MANIFEST["cases"])


@functools.lru_cache(maxsize=None)
def _base():
    return transformers.XmodModel.from_pretrained(FX / "base", attn_implementation="eager",
                                                  add_pooling_layer=False).eval()


def _inputs() -> dict:
    """The fixture's inputs and lang_ids, which transformers' X-MOD without languages needs (any value: it selects
    no language adapter; the package passes its own)."""
    inputs = load_file(FX / "inputs.safetensors")
    return {**inputs, "lang_ids": torch.zeros(inputs["input_ids"].shape[0], dtype=torch.long)}


def _expected(case: str = "base"):
    return load_file(FX / case / "expected.safetensors")["last_hidden_state"]


def test_fixture_set_is_complete():
    assert CASES == sorted(["seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv", "lora", "lora_qkv_ffn", "ia3",
                            "prefix_tuning"])


def test_base_model_matches_the_packages():
    with torch.no_grad():
        torch.testing.assert_close(_base()(**_inputs()).last_hidden_state, _expected(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_package_files_load_and_match(case):
    model = adapterkit.init(copy.deepcopy(_base()))
    assert isinstance(adapterkit.interfaces.get_interface("xmod"), XmodInterface)
    assert model.adapter_state.interface.residual_sites["output_adapter"].module == "output"
    model.load_adapter(str(FX / case), set_active=True)
    with torch.no_grad():
        out = model(**_inputs()).last_hidden_state
    assert (out - _expected()).abs().max() > 1e-3
    torch.testing.assert_close(out, _expected(case), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["seq_bn", "prefix_tuning", "lora"])
def test_save_as_adapterhub_gives_the_package_names_back(case, tmp_path):
    model = adapterkit.init(copy.deepcopy(_base()))
    name = model.load_adapter(str(FX / case), set_active=True)
    model.save_adapter(str(tmp_path / case), name, format="adapterhub")
    ours, theirs = load_file(tmp_path / case / "adapter.safetensors"), load_file(FX / case / "adapter.safetensors")
    assert ours and set(ours) <= set(theirs)  # (the package also writes its prefix pool's per-layer aliases)
    for key, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[key], atol=0, rtol=0)


def test_an_xmod_with_its_own_language_adapters_keeps_them():
    config = transformers.XmodConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, vocab_size=50, max_position_embeddings=40,
                                     languages=["en_XX", "de_DE"], default_language="en_XX")
    torch.manual_seed(0)
    model = transformers.XmodModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # (language adapters that matter)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(ids).last_hidden_state
        no_lang = copy.deepcopy(model)
        for layer in no_lang.encoder.layer:
            for adapter in layer.output.adapter_modules.values():
                adapter.dense2.weight.zero_(), adapter.dense2.bias.zero_()
        assert (no_lang(ids).last_hidden_state - before).abs().max() > 1e-2  # they change the output
    adapterkit.init(model)
    assert not isinstance(model.adapter_state.interface, XmodInterface)
    model.add_adapter("a", config="seq_bn")
    with torch.no_grad():
        torch.testing.assert_close(model(ids).last_hidden_state, before, atol=1e-6, rtol=0)
