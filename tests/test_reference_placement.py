"""AdapterHub checkpoints the `adapters` package places differently from adapterkit load with the package's placement
and equal its outputs: LoRA and (IA)^3 on Llama's FFN (the package: "intermediate" on down_proj, "output" on
up_proj) and on gated T5's FFN ("intermediate" on wi_1 alone). Fixtures: tools/make_placement_fixtures.py, written
by the package's own save_adapter. New adapters keep adapterkit's placement (test_checkpoint_adapterhub.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import adapterkit

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_ref_placement"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CASES = [(arch, case) for arch, entry in sorted(MANIFEST["archs"].items()) for case in entry["cases"]]
PLACED = {"llama": {"mlp.down_proj", "mlp.up_proj"}, "t5-gated": {"DenseReluDense.wi_1", "DenseReluDense.wo"}}
ADAPTERKIT_ONLY = {"llama": "mlp.gate_proj", "t5-gated": "DenseReluDense.wi_0"}


def _base(arch: str):
    cls = getattr(transformers, MANIFEST["archs"][arch]["model_class"])
    return cls.from_pretrained(FIXTURES / arch / "base", attn_implementation="eager").eval()


def test_fixtures_cover_llama_and_gated_t5():
    assert CASES == [(arch, case) for arch in ("llama", "t5-gated") for case in ("lora_ffn", "ia3")]


@pytest.mark.parametrize("arch,case", CASES)
def test_package_checkpoint_keeps_its_placement_and_outputs(arch, case, tmp_path):
    model = adapterkit.init(_base(arch))
    name = model.load_adapter(FIXTURES / arch / case, set_active=True)
    inputs = load_file(FIXTURES / arch / "inputs.safetensors")
    expected = load_file(FIXTURES / arch / case / "expected.safetensors")["last_hidden_state"]
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
        with adapterkit.AdapterSetup(None):
            base = model(**inputs).last_hidden_state
    assert (base - expected).abs().max() > 1e-3
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # the placement is in the config: the exact modules it adapts, the package's FFN ones among them
    targets = model.adapters_config[name].target_modules
    ffn = {".".join(t.split(".")[-2:]) for t in targets} & (PLACED[arch] | {ADAPTERKIT_ONLY[arch]})
    assert ffn and ffn <= PLACED[arch]
    # it saves and reloads (adapterkit format) with the same placement and outputs
    model.save_adapter(tmp_path / "ours", name)
    again = adapterkit.init(_base(arch))
    again.load_adapter(tmp_path / "ours", set_active=True)
    assert again.adapters_config[name].target_modules == targets
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).last_hidden_state, out, atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "t5-gated"])
def test_new_adapters_keep_adapterkit_placement(arch):
    """Beside a loaded package-placed adapter, a new adapter's intermediate LoRA sits where adapterkit puts it."""
    model = adapterkit.init(_base(arch))
    model.load_adapter(FIXTURES / arch / "lora_ffn")
    model.add_adapter("new", config="lora[intermediate_lora=True]")
    state = model.adapter_state
    names = {id(m): n for n, m in model.named_modules()}
    adapted = {names[id(state.sites[key].target.module)] for key, _ in state.layer_modules("new")}
    assert any(n.endswith(ADAPTERKIT_ONLY[arch]) for n in adapted)
