#!/usr/bin/env python
"""AdapterPlus on DistilBERT and BART with the real `adapters` package: post-LN layers that add the residual and
apply the norm in their own forward, where `original_ln_after=False` must skip that norm.

Run inside the reference venv (tools/make_reference_fixtures.sh), after tools/make_arch_fixtures.py, whose tiny
bases and inputs it reuses (tests/fixtures/adapters_ref_archs/<arch>/{base,inputs.safetensors}). Writes
tests/fixtures/adapters_plus_archs/<arch>/{adapter_config.json, adapter.safetensors, expected.safetensors} and a
manifest. stochastic_depth=0 (eval-mode outputs do not depend on it; the package would need torchvision).
"""

from __future__ import annotations

import sys
from pathlib import Path

import adapters
import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402

BASES = fc.FIXTURES / "adapters_ref_archs"
OUT = fc.FIXTURES / "adapters_plus_archs"
ARCHS = {"distilbert": "DistilBertModel", "bart": "BartModel"}
CONFIG = {"reduction_factor": 4, "stochastic_depth": 0.0}
SEED = 8300


def main() -> None:
    fc.deterministic()
    manifest = {"versions": fc.versions(), "config": CONFIG, "cases": {}}
    for index, (arch, cls) in enumerate(ARCHS.items()):
        model = getattr(transformers, cls).from_pretrained(BASES / arch / "base", attn_implementation="eager").eval()
        inputs = load_file(BASES / arch / "inputs.safetensors")
        adapters.init(model)
        before = set(model.state_dict())
        model.add_adapter("adapterplus", config=adapters.AdapterPlusConfig(**CONFIG))
        model.set_active_adapters("adapterplus")
        params = dict(model.named_parameters())
        keys = sorted(k for k in params if k not in before)
        fc.randomise(params, keys, SEED + index, lambda k: False)
        with torch.no_grad():
            out = fc.forward(model, inputs)
            model.set_active_adapters(None)
            base_out = fc.forward(model, inputs)
        assert (out - base_out).abs().max() > fc.MIN_DIFF, arch
        case = OUT / arch
        case.mkdir(parents=True, exist_ok=True)
        fc.write_json(case / "adapter_config.json", model.adapters_config.get("adapterplus").to_dict())
        save_file({k: params[k].detach().contiguous() for k in keys}, case / "adapter.safetensors")
        save_file({"last_hidden_state": out}, case / "expected.safetensors")
        manifest["cases"][arch] = {"model_class": cls, "keys": keys, "seed": SEED + index}
    fc.write_json(OUT / "manifest.json", manifest)
    print(fc.tree_size(OUT), "bytes")


if __name__ == "__main__":
    main()
