"""Our AdapterHub-format export loads in the real `adapters` package (reference venv) with our outputs (1e-5).

Slow (starts the reference venv's Python) and skipped where that venv is missing; the reference venv is made by
`make fixtures` (tools/make_reference_fixtures.sh). ADAPTERKIT_REF_PYTHON overrides its location.
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
REF_PYTHON = next((p for p in [os.environ.get("ADAPTERKIT_REF_PYTHON"), ROOT / ".venv-ref/bin/python",
                               "/work/main/.venv-ref/bin/python"] if p and Path(p).is_file()), None)
EXPORTED = {m: c for m, c in METHODS.items() if m != "lora_all"}  # AdapterHub LoRA cannot target "o"
EXPORTED.update({"prefix": "prefix_tuning", "prefix_flat": "prefix_tuning_flat",
                 "prefix_short": "prefix_tuning[prefix_length=7,bottleneck_size=16,leave_out=[1]]"})

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(REF_PYTHON is None, reason="reference venv with the `adapters` package not found")]


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_adapters_package_loads_our_export(arch, tmp_path):
    model = adapterkit.init(load_base(arch))
    inputs = load_file(REF_FIXTURES / arch / "inputs.safetensors")
    ours, entries = {}, []
    for i, method in enumerate(EXPORTED):
        model.add_adapter(method, config=EXPORTED[method], set_active=True)
        randomise(model.adapterkit[method], seed=i)
        with torch.no_grad():
            ours[method] = model(**inputs).last_hidden_state
        safetensors = i % 2 == 0  # both weight files
        model.save_adapter(tmp_path / method, method, format="adapterhub", safetensors=safetensors)
        entries.append({"dir": str(tmp_path / method), "name": method, "safetensors": safetensors})
    (tmp_path / "request.json").write_text(json.dumps({
        "arch": arch, "base": str(REF_FIXTURES / arch / "base"),
        "inputs": str(REF_FIXTURES / arch / "inputs.safetensors"), "adapters": entries}))
    done = subprocess.run([str(REF_PYTHON), str(ROOT / "tools" / "load_with_adapters.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = load_file(tmp_path / "outputs.safetensors")
    assert set(theirs) == set(ours)
    for method in EXPORTED:
        diff = (theirs[method] - ours[method]).abs().max().item()
        print(f"{arch}/{method}: max |adapters - adapterkit| = {diff:.2e}", file=sys.stderr)
        assert diff <= 1e-5, (method, diff)
