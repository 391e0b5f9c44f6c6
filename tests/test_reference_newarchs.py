"""Our forward equals the `adapters` package's on the architectures of issue 17: ALBERT, BEiT, BertGeneration,
CLIP's text and vision towers, GPT-J, MBart, mT5, PLBart and Whisper (built into `adapters`), and Gemma 2,
Gemma 3 (text), Qwen3 and Phi (its plugin interface), for seq_bn, double_seq_bn, par_bn, lora, FFN LoRA
(lora_qkv_ffn), ia3 and prefix tuning. Fixtures: tools/make_newarch_fixtures.py (loaded as in
test_reference_archs.py). Where the package cannot run a case, adapterkit's is checked row by row: each row of the
padded batch equals that row run alone, unpadded."""

from __future__ import annotations

import pytest
import torch

import adapterkit
from adapterkit.io import state_dict_to_adapterhub
from arch_fixtures import ArchFixtures

FX = ArchFixtures("adapters_ref_newarchs")
CASES = [(arch, case) for arch in FX.archs for case in FX.manifest["archs"][arch]["cases"]]
PLUGIN = ("gemma2", "gemma3_text", "phi", "qwen3")
# FFN LoRA / (IA)^3 the package places elsewhere: "intermediate" on up_proj alone (plugin: Gemma, Qwen3) or on
# wi_1 alone (gated mT5); `load_adapter` keeps that placement (module-targeted; test_reference_placement.py)
PLACED = {(arch, case) for arch in ("gemma2", "gemma3_text", "mt5", "qwen3") for case in ("lora_qkv_ffn", "ia3")}
# where the package computes another function than the method (a defect of its wiring, see the manifest's
# "corrected" entries and tools/make_newarch_fixtures.py): compared with its model with that defect undone
DEFECTS = {(arch, case): entry for arch in FX.archs
           for case, entry in FX.manifest["archs"][arch].get("corrected", {}).items()}
# sdpa too where the adapter acts inside the attention (bottleneck adapters do not reach it)
RUNS = [(arch, case, attn) for arch, case in CASES if (arch, case) not in PLACED | set(DEFECTS)
        for attn in (FX.attns(arch) if case in ("lora", "ia3", "prefix_tuning") else ["eager"])]
# what the package cannot do here: prefix tuning through its plugin interface; Phi's parallel adapter (the
# package's forward crashes: its hook gets no residual for Phi's FFN); BEiT prefix tuning (its relative position
# bias is not widened for the prefix: a shape error)
UNSUPPORTED = {**{(arch, "prefix_tuning"): "is not supported by this model" for arch in PLUGIN},
               ("phi", "par_bn"): "forward fails: TypeError", ("beit", "prefix_tuning"): "forward fails: RuntimeError"}


def test_fixture_set_is_complete():
    assert FX.archs == sorted(["albert", "beit", "bert-generation", "clip_text", "clip_vision", "gemma2",
                               "gemma3_text", "gptj", "mbart", "mt5", "phi", "plbart", "qwen3", "whisper"])
    found = {}
    for arch in FX.archs:
        entry = FX.manifest["archs"][arch]
        assert len(entry["cases"]) + len(entry["unsupported"]) == 7
        found.update({(arch, case): reason for case, reason in entry["unsupported"].items()})
    assert set(found) == set(UNSUPPORTED)
    for key, reason in found.items():
        assert UNSUPPORTED[key] in reason, (key, reason)
    assert sum(p.stat().st_size for p in FX.dir.rglob("*") if p.is_file()) < 2.5 * 1024 * 1024


@pytest.mark.parametrize("arch", FX.archs)
def test_base_model_matches(arch):
    with torch.no_grad():
        out = FX.load_base(arch)(**FX.inputs(arch)).last_hidden_state
    torch.testing.assert_close(out, FX.expected(arch), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,case,attn", RUNS)
def test_matches_adapters_package(arch, case, attn):
    model, _, inputs, expected = FX.load_case(arch, case, attn)
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        with adapterkit.AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert (base - expected).abs().max() > 1e-3  # the adapter matters on this fixture
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,case", sorted(PLACED))
def test_package_placement_loads_and_matches(arch, case, tmp_path):
    """The fixture as the package saves it: refused as a plain import (naming why), loaded with its placement."""
    with pytest.raises(adapterkit.AdapterError, match="on other projections than adapterkit's"):
        FX.load_case(arch, case, "eager")
    model = adapterkit.init(FX.load_base(arch))
    name = model.load_adapter(FX.hub_dir(tmp_path, arch, case), set_active=True)
    targets = model.adapters_config[name].target_modules
    assert any(t.endswith(("up_proj", "wi_1")) for t in targets)
    assert not any(t.endswith(("gate_proj", "wi_0")) for t in targets)
    with torch.no_grad():
        torch.testing.assert_close(model(**FX.inputs(arch)).last_hidden_state, FX.expected(arch, case), atol=1e-5,
                                   rtol=0)


def test_the_defects_are_the_known_ones():
    assert sorted(DEFECTS) == sorted([("albert", "double_seq_bn"), ("gptj", "seq_bn"), ("gptj", "par_bn"),
                                      ("phi", "seq_bn"), ("phi", "par_bn")] + [(arch, case) for arch in ("gemma2", "gemma3_text")
                                                            for case in ("seq_bn", "double_seq_bn", "par_bn")])


@pytest.mark.parametrize("arch,case", sorted(DEFECTS))
def test_matches_the_package_with_its_defect_undone(arch, case):
    """Where the package's wiring is wrong (DEFECTS[...]["defect"]), adapterkit equals the package's model with that
    one thing undone, and differs from the package's own output (Phi's par_bn: the package's forward fails)."""
    model, _, inputs, expected = FX.load_case(arch, case, "eager")
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        with adapterkit.AdapterSetup(None):
            assert (model(**inputs).last_hidden_state - out).abs().max() > 1e-3
    assert (arch, case) == ("phi", "par_bn") if expected is None else (out - expected).abs().max() > 1e-2
    torch.testing.assert_close(out, FX.expected(arch, case, "expected_corrected"), atol=1e-5, rtol=0)


def _rows_alone(model, inputs):
    """Each row of the (padded) batch equals that row run alone, unpadded; returns the batch output."""
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        for row in range(out.shape[0]):
            alone = {k: v[row:row + 1] for k, v in inputs.items()}
            n = int(inputs["attention_mask"][row].sum()) if "attention_mask" in inputs else None
            if n is not None:
                alone = {k: v[:, :n] for k, v in alone.items()}
            torch.testing.assert_close(model(**alone).last_hidden_state[0], out[row, :n], atol=1e-5, rtol=0)
    return out


@pytest.mark.parametrize("arch,case", sorted(UNSUPPORTED))
def test_rows_where_the_package_has_no_reference(arch, case):
    """Prefix tuning through the plugin (and BEiT's) and Phi's parallel adapter: randomised adapterkit adapters
    change the output, and each padded row equals that row alone."""
    config = {"prefix_tuning": "prefix_tuning[prefix_length=4,bottleneck_size=8]", "par_bn": "par_bn"}[case]
    model = adapterkit.init(FX.load_base(arch))
    model.add_adapter(case, config=config, set_active=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.adapterkit.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    inputs = FX.inputs(arch)
    out = _rows_alone(model, inputs)
    with torch.no_grad(), adapterkit.AdapterSetup(None):
        assert (model(**inputs).last_hidden_state - out).abs().max() > 1e-3


@pytest.mark.parametrize("arch,case", [key for key in CASES if key not in PLACED])
def test_export_writes_the_package_checkpoint_back(arch, case):
    model, _, _, _ = FX.load_case(arch, case, "eager")
    state = model.adapter_state
    exported = state_dict_to_adapterhub(model.adapterkit[case].state_dict(), case, state.interface,
                                        state.configs[case], state)
    reference = FX.weights(arch, case)
    assert set(exported) == set(reference), set(exported) ^ set(reference)
    for key, tensor in reference.items():
        assert torch.equal(exported[key], tensor), key


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_plugin_decoders_name_the_plugin_placement(model_type):
    """Qwen2 and Qwen3 reach the package through its plugin interface (intermediate on up_proj alone), not through
    its built-in Llama (intermediate on down_proj): an AdapterHub FFN LoRA import names the plugin placement."""
    from adapterkit.interfaces.registry import get_interface
    differs = get_interface(model_type).adapterhub_differs
    assert set(differs) == {"intermediate_1"} and "plugin interface" in differs["intermediate_1"]
    assert "down_proj" not in differs["intermediate_1"]
