"""Our forward equals the `adapters` package's on DistilBERT, DeBERTa, DeBERTa-v2, ViT, GPT-2, BART and T5
(fixtures from tools/make_arch_fixtures.py: tiny base models saved by transformers 4.57, randomised adapter
weights, padded inputs, the reference's last_hidden_state).

The base models are loaded with transformers 5's `from_pretrained` (which renames ViT's 4.x weights), the adapter
weights through `io.adapterhub` with the names each interface declares.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit
import adapterkit.interfaces.t5
from adapterkit.errors import AdapterConfigError
from adapterkit.interfaces.deberta import DEBERTA_ADAPTERHUB_QKV
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub, state_dict_to_adapterhub

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_ref_archs"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
ARCHS = sorted(MANIFEST["archs"])
# The `adapters` package puts Llama's "intermediate" LoRA / (IA)^3 on down_proj and its "output" on up_proj alone
# (adapterkit: up + gate, and down): such checkpoints are refused on import, naming why (test below)
REFUSED = {("llama", "lora_qkv_ffn"), ("llama", "ia3")}
PREFIX_CASES = ("prefix_tuning", "prefix_tuning_gated", "prefix_tuning_dec_self")
# Its T5 prefix tuning shifts the relative position bias (test below: refused, and equal once that is emulated)
T5_PREFIX = {("t5", case) for case in PREFIX_CASES}
# DeBERTa's disentangled attention does not call transformers' attention registry: no prefix tuning there
NO_PREFIX = {(arch, case) for arch in ("deberta", "deberta-v2") for case in PREFIX_CASES}
CASES = [(arch, case) for arch in ARCHS for case in MANIFEST["archs"][arch]["cases"]
         if (arch, case) not in REFUSED | T5_PREFIX | NO_PREFIX]


def model_class(arch: str):
    return getattr(transformers, MANIFEST["archs"][arch]["model_class"])


@functools.lru_cache(maxsize=None)
def _loaded(arch: str, attn: str):
    model = model_class(arch).from_pretrained(FIXTURES / arch / "base", attn_implementation=attn,
                                              **MANIFEST["archs"][arch]["model_kwargs"])
    return model.eval()


def load_base(arch: str, attn: str = "eager"):
    return copy.deepcopy(_loaded(arch, attn))


# DeBERTa has no sdpa path in transformers
RUNS = [(arch, case, attn) for arch, case in CASES
        for attn in (["eager", "sdpa"] if model_class(arch)._supports_sdpa else ["eager"])]


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


def _load_case(arch: str, case: str, attn: str, interface=None):
    """Our model with the fixture's adapter loaded and active, its inputs and the reference output."""
    config = config_from_adapterhub(json.loads((FIXTURES / arch / case / "adapter_config.json").read_text()))
    model = adapterkit.init(load_base(arch, attn), interface=interface)
    model.add_adapter(case, config=config)
    state = model.adapter_state
    weights = state_dict_from_adapterhub(load_file(FIXTURES / arch / case / "adapter.safetensors"), case,
                                         state.interface, config, state=state)
    ours = model.adapterkit[case].state_dict()
    assert set(weights) == set(ours), set(weights) ^ set(ours)
    model.adapterkit[case].load_state_dict(weights)
    model.set_active_adapters(case)
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")["last_hidden_state"]
    return model, config, load_file(FIXTURES / arch / "inputs.safetensors"), expected


@pytest.mark.parametrize("case", PREFIX_CASES)
def test_t5_prefix_tuning_refused_naming_the_position_shift(case):
    config = config_from_adapterhub(json.loads((FIXTURES / "t5" / case / "adapter_config.json").read_text()))
    model = adapterkit.init(load_base("t5"))
    model.add_adapter(case, config=config)
    state = model.adapter_state
    with pytest.raises(AdapterConfigError, match="prefix tuning, which computes another function in this "
                                                   "architecture: .*relative position bias"):
        state_dict_from_adapterhub(load_file(FIXTURES / "t5" / case / "adapter.safetensors"), case,
                                   state.interface, config, state=state)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", PREFIX_CASES)
def test_t5_prefix_tuning_equals_the_package_with_its_position_shift(case, attn):
    """All that differs is the position bias: with `adapters`' (relative positions computed over prefix + sequence,
    so real keys sit prefix_length further on) emulated, encoder, decoder and cross-attention prefixes, their gates
    and masks give the package's output; without it, they do not."""
    interface = dataclasses.replace(adapterkit.interfaces.t5.T5, adapterhub_differs={})
    model, config, inputs, expected = _load_case("t5", case, attn, interface)
    with torch.no_grad():
        ours = model(**inputs).last_hidden_state
    assert (ours - expected).abs().max() > 1e-2
    stacks = [model.encoder, model.decoder] if config.encoder_prefix else [model.decoder]
    for stack in stacks:  # the first block computes the bias every block of its stack reuses
        attention = stack.block[0].layer[0].SelfAttention
        attention.compute_bias = functools.partial(
            lambda q, k, *args, bias, **kwargs: bias(q, k + config.prefix_length, *args, **kwargs),
            bias=attention.compute_bias)
    with torch.no_grad():
        shifted = model(**inputs).last_hidden_state
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["deberta", "deberta-v2"])
def test_prefix_tuning_refused_where_attention_bypasses_the_registry(arch):
    config = config_from_adapterhub(json.loads((FIXTURES / arch / "prefix_tuning" / "adapter_config.json")
                                               .read_text()))
    model = adapterkit.init(load_base(arch))
    with pytest.raises(adapterkit.AdapterError, match="prefix tuning cannot attach to layer 0 of Deberta.*attention "
                                                      "does not go through transformers' attention-function registry"):
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
