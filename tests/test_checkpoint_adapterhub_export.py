"""Our AdapterHub-format export loads in the real `adapters` package (reference venv) with our outputs (1e-5).

Slow (starts the reference venv's Python), run by CI (marked `ci`); skipped where that venv is missing (a failure
under `make test`, which creates it: `make ref-venv`, tools/make_reference_venv.sh). ADAPTERKIT_REF_PYTHON overrides
its location.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import adapterkit

from ckpt_helpers import METHODS, randomise
from test_reference_adapters import FIXTURES as REF_FIXTURES, load_base

ROOT = Path(__file__).resolve().parent.parent
REF_PYTHON = next((p for p in [os.environ.get("ADAPTERKIT_REF_PYTHON"), ROOT / ".venv-ref/bin/python"]
                   if p and Path(p).is_file()), None)
EXPORTED = {m: c for m, c in METHODS.items() if m != "lora_all"}  # AdapterHub LoRA cannot target "o"
EXPORTED.update({"prefix": "prefix_tuning", "prefix_flat": "prefix_tuning_flat",
                 "prefix_short": "prefix_tuning[prefix_length=7,bottleneck_size=16,leave_out=[1]]"})

pytestmark = [pytest.mark.slow, pytest.mark.ci,
              pytest.mark.skipif(REF_PYTHON is None, reason="reference venv with the `adapters` package not found")]


# Models whose bottlenecks run at sublayer-hook sites, exported under the names their interfaces give AdapterHub
# (attention_adapters, output_adapters, ViT's 4.x layer and projection names; GPT-2's fused c_attn as one LoRA);
# `adapters` has no invertible adapters for ViT, its Llama "intermediate" LoRA / (IA)^3 sits on down_proj (refused:
# test_checkpoint_adapterhub.py) and its T5 prefix tuning shifts the relative positions (exported with
# shift_positions=True, which T5 prefix tuning needs for that format: test_reference_archs.py)
SUBLAYER_EXPORTED = {m: METHODS[m] for m in ("seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "seq_bn_inv",
                                             "double_seq_bn_inv", "lora", "ia3")}
SUBLAYER_EXPORTED["ia3_attn"] = "ia3[intermediate_lora=False]"  # Llama's FFN projections are refused (see below)
SUBLAYER_EXPORTED["prefix"] = "prefix_tuning[prefix_length=4,bottleneck_size=8]"
SUBLAYER_EXPORTED["prefix_gated"] = "prefix_tuning[prefix_length=4,bottleneck_size=8,use_gating=True,shared_gating=False]"
SEQ2SEQ_EXPORTED = {"cross": "double_seq_bn[cross_adapter=True,reduction_factor=4]",
                    "prefix_dec": "prefix_tuning[prefix_length=4,bottleneck_size=8,encoder_prefix=False]"}
NOT_EXPORTED = {"vit": ("seq_bn_inv", "double_seq_bn_inv"), "llama": ("ia3",)}
SHIFTED_PREFIX = {"t5"}  # architectures whose AdapterHub prefix tuning is PrefixTuningConfig(shift_positions=True)


def _sublayer_base(arch: str, tmp_path: Path):
    """(model, fixtures dir holding <arch>/base and <arch>/inputs.safetensors) for a sublayer-hook architecture:
    the arch fixtures' base where there is one, else (Llama) a tiny model saved on the spot."""
    import test_reference_archs
    if arch in test_reference_archs.ARCHS:
        return test_reference_archs.load_base(arch), test_reference_archs.FIXTURES
    import archs
    from safetensors.torch import save_file
    model = archs.model(arch, attn_implementation="eager")
    model.save_pretrained(tmp_path / "ref" / arch / "base")
    save_file(archs.inputs(arch), str(tmp_path / "ref" / arch / "inputs.safetensors"))
    return model, tmp_path / "ref"


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "distilbert", "vit", "llama", "bart", "t5"])
def test_adapters_package_loads_our_export(arch, tmp_path):
    if arch in ("bert", "roberta"):
        model = adapterkit.init(load_base(arch))
        fixtures, exported = REF_FIXTURES, EXPORTED
    else:
        base, fixtures = _sublayer_base(arch, tmp_path)
        model = adapterkit.init(base)
        exported = SUBLAYER_EXPORTED | (SEQ2SEQ_EXPORTED if model.config.is_encoder_decoder else {})
        exported = {m: c for m, c in exported.items() if m not in NOT_EXPORTED.get(arch, ())}
        if arch in SHIFTED_PREFIX:
            exported = {m: c[:-1] + ",shift_positions=True]" if c.startswith("prefix_tuning[") else c
                        for m, c in exported.items()}
    with torch.no_grad():
        plain = model(**load_file(fixtures / arch / "inputs.safetensors")).last_hidden_state
    inputs = load_file(fixtures / arch / "inputs.safetensors")
    ours, entries = {}, []
    for i, method in enumerate(exported):
        model.add_adapter(method, config=exported[method], set_active=True)
        randomise(model.adapterkit[method], seed=i)
        with torch.no_grad():
            ours[method] = model(**inputs).last_hidden_state
        assert (ours[method] - plain).abs().max() > 1e-3, f"{method} does not change {arch}'s output"
        safetensors = i % 2 == 0  # both weight files
        model.save_adapter(tmp_path / method, method, format="adapterhub", safetensors=safetensors)
        entries.append({"dir": str(tmp_path / method), "name": method, "safetensors": safetensors})
    (tmp_path / "request.json").write_text(json.dumps({
        "arch": arch, "base": str(fixtures / arch / "base"),
        "inputs": str(fixtures / arch / "inputs.safetensors"), "adapters": entries}))
    done = subprocess.run([str(REF_PYTHON), str(ROOT / "tools" / "load_with_adapters.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = load_file(tmp_path / "outputs.safetensors")
    assert set(theirs) == set(ours)
    for method in exported:
        diff = (theirs[method] - ours[method]).abs().max().item()
        print(f"{arch}/{method}: max |adapters - adapterkit| = {diff:.2e}", file=sys.stderr)
        assert diff <= 1e-5, (method, diff)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "bart"])
def test_adapters_package_loads_our_fusion_export(arch, tmp_path):
    """Two bottleneck adapters and their (randomised) dynamic fusion, saved in AdapterHub format, run in the
    package with our outputs."""
    if arch == "bert":
        model, fixtures = adapterkit.init(load_base(arch)), REF_FIXTURES
    else:
        base, fixtures = _sublayer_base(arch, tmp_path)
        model = adapterkit.init(base)
    inputs = load_file(fixtures / arch / "inputs.safetensors")
    entries = []
    for i, name in enumerate(("a", "b")):
        model.add_adapter(name, config="double_seq_bn")
        randomise(model.adapterkit[name], seed=10 + i)
        model.save_adapter(tmp_path / name, name, format="adapterhub")
        entries.append({"dir": str(tmp_path / name), "name": name, "safetensors": True})
    model.add_adapter_fusion(["a", "b"], set_active=True)
    randomise(model.adapterkit_fusion["a,b"], seed=12)
    with torch.no_grad():
        ours = model(**inputs).last_hidden_state
        with adapterkit.AdapterSetup("a"):
            assert (model(**inputs).last_hidden_state - ours).abs().max() > 1e-3  # the fusion matters
    safetensors = arch != "gpt2"  # both weight files
    model.save_adapter_fusion(tmp_path / "fusion", ["a", "b"], format="adapterhub", safetensors=safetensors)
    (tmp_path / "request.json").write_text(json.dumps({
        "arch": arch, "base": str(fixtures / arch / "base"), "inputs": str(fixtures / arch / "inputs.safetensors"),
        "adapters": entries,
        "fusions": [{"dir": str(tmp_path / "fusion"), "adapters": ["a", "b"], "safetensors": safetensors}]}))
    done = subprocess.run([str(REF_PYTHON), str(ROOT / "tools" / "load_with_adapters.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = load_file(tmp_path / "outputs.safetensors")["fusion:a,b"]
    diff = (theirs - ours).abs().max().item()
    print(f"{arch}/fusion: max |adapters - adapterkit| = {diff:.2e}", file=sys.stderr)
    assert diff <= 1e-5
