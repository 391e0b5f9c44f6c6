"""Our forward equals the `adapters` package's on DistilBERT, DeBERTa, DeBERTa-v2, ViT, GPT-2, BART and T5
(fixtures from tools/make_arch_fixtures.py: tiny base models saved by transformers 4.57, randomised adapter
weights, padded inputs, the reference's last_hidden_state).

The base models are loaded with transformers 5's `from_pretrained` (which renames ViT's 4.x weights), the adapter
weights through `io.adapterhub` with the names each interface declares.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

import adapterkit
from adapterkit.errors import AdapterConfigError
from adapterkit.interfaces.deberta import DEBERTA_ADAPTERHUB_QKV
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub, state_dict_to_adapterhub
from arch_fixtures import ArchFixtures

FX = ArchFixtures("adapters_ref_archs")
FIXTURES, MANIFEST, ARCHS = FX.dir, FX.manifest, FX.archs
# The `adapters` package puts Llama's "intermediate" LoRA / (IA)^3 on down_proj and its "output" on up_proj alone
# (adapterkit: up + gate, and down): such checkpoints are refused on import, naming why (test below)
REFUSED = {("llama", "lora_qkv_ffn"), ("llama", "ia3")}
PREFIX_CASES = ("prefix_tuning", "prefix_tuning_gated", "prefix_tuning_dec_self")
NO_PREFIX: set = set()  # DeBERTa's own attention takes prefixes through hooks (sites/own_attention.py)
CASES = [(arch, case) for arch in ARCHS for case in MANIFEST["archs"][arch]["cases"]
         if (arch, case) not in REFUSED | NO_PREFIX]
model_class, load_base, _load_case = FX.model_class, FX.load_base, FX.load_case


# DeBERTa has no sdpa path in transformers
RUNS = [(arch, case, attn) for arch, case in CASES for attn in FX.attns(arch)]


def test_fixture_set_is_complete():
    assert ARCHS == ["bart", "deberta", "deberta-v2", "distilbert", "gpt2", "llama", "t5", "vit"]
    for arch in ARCHS:
        entry = MANIFEST["archs"][arch]
        # everything the reference supports here was generated; ViT has no invertible adapters there
        assert set(entry["unsupported"]) == ({"seq_bn_inv", "double_seq_bn_inv"} if arch == "vit" else set())
        # encoder-decoder models: a subset (size), including adapters after the cross-attention and prefix tuning
        # of the encoder, decoder and cross-attention
        expected = 10 if entry["kind"] == "seq2seq" else 13
        assert len(entry["cases"]) + len(entry["unsupported"]) == expected
        assert {"prefix_tuning", "prefix_tuning_gated"} <= set(entry["cases"])
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 1.75 * 1024 * 1024


@pytest.mark.parametrize("arch,case", sorted(REFUSED))
def test_refused_where_the_package_puts_the_adapter_elsewhere(arch, case):
    config = config_from_adapterhub(json.loads((FIXTURES / arch / case / "adapter_config.json").read_text()))
    assert config.intermediate_lora  # the case really has FFN adapters
    model = adapterkit.init(load_base(arch))
    model.add_adapter(case, config=config)
    state = model.adapter_state
    with pytest.raises(AdapterConfigError, match="has intermediate (and output )?LoRA / \\(IA\\)\\^3 on other "
                                                   "projections than adapterkit's in this architecture: the "
                                                   "`adapters` package puts its intermediate"):
        state_dict_from_adapterhub(load_file(FIXTURES / arch / case / "adapter.safetensors"), case, state.interface,
                                   config, state=state)


@pytest.mark.parametrize("arch", ARCHS)
def test_base_model_matches(arch):
    model = load_base(arch)
    inputs = load_file(FIXTURES / arch / "inputs.safetensors")
    expected = load_file(FIXTURES / arch / "base" / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def _interface(arch: str, config):
    # `adapters` slices DeBERTa's fused in_proj as [q | k | v] blocks (DeBERTa interleaves them per head);
    # its LoRA / (IA)^3 fixtures are reproduced with the interface that declares that layout.
    if arch == "deberta" and config.architecture == "lora":
        return DEBERTA_ADAPTERHUB_QKV
    return None


@pytest.mark.parametrize("arch,case,attn", RUNS)
def test_matches_adapters_package(arch, case, attn):
    config = config_from_adapterhub(json.loads((FIXTURES / arch / case / "adapter_config.json").read_text()))
    model, _, inputs, expected = _load_case(arch, case, attn, _interface(arch, config))
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        with adapterkit.AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert (base - expected).abs().max() > 1e-3  # the adapter matters on this fixture
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", PREFIX_CASES)
def test_t5_prefix_tuning_needs_shift_positions(case):
    """The package computes T5's relative position bias over prefix and sequence together: its weights are refused
    by an adapter without shift_positions (AdapterHub loading sets it; test_matches_adapters_package runs them)."""
    config = config_from_adapterhub(json.loads((FIXTURES / "t5" / case / "adapter_config.json").read_text()))
    model = adapterkit.init(load_base("t5"))
    model.add_adapter(case, config=config)
    state = model.adapter_state
    with pytest.raises(AdapterConfigError, match="relative position bias over prefix and sequence together .*"
                                                   "PrefixTuningConfig\\(shift_positions=True\\)"):
        state_dict_from_adapterhub(load_file(FIXTURES / "t5" / case / "adapter.safetensors"), case,
                                   state.interface, config, state=state)
    with pytest.raises(AdapterConfigError, match="shift_positions=True"):
        state_dict_to_adapterhub(model.adapterkit[case].state_dict(), case, state.interface, config, state)


@pytest.mark.parametrize("case", PREFIX_CASES)
def test_t5_shift_positions_is_what_differs_and_load_adapter_sets_it(case, tmp_path):
    """The same weights without the shift compute another function; `load_adapter` on the package's directory
    gives its outputs (the flag set), and the adapterkit checkpoint keeps the flag."""
    model, config, inputs, expected = _load_case("t5", case, "eager")
    assert config.shift_positions
    unshifted = adapterkit.init(load_base("t5"))
    unshifted.add_adapter(case, config=config.replace(shift_positions=False), set_active=True)
    unshifted.adapterkit[case].load_state_dict(model.adapterkit[case].state_dict())
    with torch.no_grad():
        assert (unshifted(**inputs).last_hidden_state - expected).abs().max() > 1e-2
    hub = FX.hub_dir(tmp_path, "t5", case)  # the fixture as the package saves it
    loaded = adapterkit.init(load_base("t5"))
    name = loaded.load_adapter(hub, set_active=True)
    assert loaded.adapters_config[name].shift_positions
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).last_hidden_state, expected, atol=1e-5, rtol=0)
    loaded.save_adapter(tmp_path / "ours", name)
    again = adapterkit.init(load_base("t5"))
    name = again.load_adapter(tmp_path / "ours")
    assert again.adapters_config[name].shift_positions


@pytest.mark.parametrize("arch", ["deberta", "deberta-v2"])
def test_prefix_tuning_refused_where_attention_bypasses_the_registry_undeclared(arch):
    """Without an `own_attention` description, an attention outside the registry refuses prefix tuning, saying so."""
    config = config_from_adapterhub(json.loads((FIXTURES / arch / "prefix_tuning" / "adapter_config.json")
                                               .read_text()))
    interface = dataclasses.replace(adapterkit.interfaces.get_interface(arch), own_attention=None)
    model = adapterkit.init(load_base(arch), interface=interface)
    with pytest.raises(adapterkit.AdapterError, match="prefix tuning cannot attach to .*Deberta.*attention "
                                                      "does not go through transformers' attention-function registry"
                                                      ", and its interface declares no own_attention"):
        model.add_adapter("prefix_tuning", config=config)


@pytest.mark.parametrize("arch,case", CASES)
def test_export_writes_the_package_checkpoint_back(arch, case):
    """AdapterHub export of the imported fixture gives the package's own keys and tensors back (encoder-decoder
    stacks, cross-attention, prefix groups and gates, invertible adapters included)."""
    config = config_from_adapterhub(json.loads((FIXTURES / arch / case / "adapter_config.json").read_text()))
    model, _, _, _ = _load_case(arch, case, "eager", _interface(arch, config))
    state = model.adapter_state
    exported = state_dict_to_adapterhub(model.adapterkit[case].state_dict(), case, state.interface,
                                        state.configs[case], state)
    reference = load_file(FIXTURES / arch / case / "adapter.safetensors")
    assert set(exported) == set(reference), set(exported) ^ set(reference)
    for key, tensor in reference.items():
        assert torch.equal(exported[key], tensor), key
