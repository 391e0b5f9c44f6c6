#!/usr/bin/env python
"""The `adapters` package's `adapter_summary` rows on the roberta-base shape for its configs beyond the 3.1 release
notes (dora, vera, dvora, prompt_tuning, loreft, noreft, direft, mtl_lora, AdapterPlus), made with the real package.

Run inside the reference venv (see tools/make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_summary_fixtures.py

It writes tests/fixtures/adapters_summary.json: {"versions": ..., "full_model": N, "rows": {name: {"config":
config.to_dict(), "architecture", "#param", "train"}}}, or {"error": message} for a config the package cannot add
to roberta-base (AdapterPlus: see `allow_stochastic_depth`). The model is built on the meta device (no weights are allocated); nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import adapters
import torch
from transformers import RobertaConfig, RobertaModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402


def allow_stochastic_depth() -> None:
    """AdapterPlus's stochastic depth makes the package import torchvision, which cannot be installed beside the
    local torch wheel here. Parameter counts do not depend on it: stand in an identity module (eval semantics)."""
    import types

    import adapters.methods.modeling as modeling

    class StochasticDepth(torch.nn.Module):
        def __init__(self, p: float, mode: str):
            super().__init__()

        def forward(self, x):
            return x

    ops = types.ModuleType("torchvision.ops.stochastic_depth")
    ops.StochasticDepth = StochasticDepth
    sys.modules["torchvision.ops.stochastic_depth"] = ops
    modeling.is_torchvision_available = lambda: True

OUT = fc.FIXTURES / "adapters_summary.json"
NAMES = ["dora", "vera", "dvora", "prompt_tuning", "loreft", "noreft", "direft", "mtl_lora"]
CLASSES = {"adapterplus": "AdapterPlusConfig"}


def main() -> None:
    allow_stochastic_depth()
    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    with torch.device("meta"):
        model = RobertaModel(config)
        adapters.init(model)
    rows = {}
    configs = {name: name for name in NAMES}
    configs.update({name: getattr(adapters, cls)() for name, cls in CLASSES.items()})
    for name, config in configs.items():
        try:
            with torch.device("meta"):
                model.add_adapter(name, config=config)
        except Exception as error:  # noqa: BLE001  (recorded: the package cannot add it)
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        rows[name] = {"config": model.adapters_config.get(name).to_dict()}
    model.train_adapter([n for n, r in rows.items() if "error" not in r])
    for row in model.adapter_summary(as_dict=True):
        if row["name"] == "Full model":
            full = row["#param"]
        else:
            rows[row["name"]].update({k: row[k] for k in ("architecture", "#param", "train")})
    fc.write_json(OUT, {"versions": fc.versions(), "full_model": full, "rows": rows})
    print(json.dumps({n: r.get("#param", r.get("error")) for n, r in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
