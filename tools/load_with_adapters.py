#!/usr/bin/env python
"""Load adapterkit's AdapterHub-format exports with the real `adapters` package and record its outputs.

Run by tests/test_checkpoint_adapterhub_export.py in the reference venv (adapters 1.3.0, transformers 4.57.x):

    .venv-ref/bin/python tools/load_with_adapters.py WORKDIR

WORKDIR/request.json: {"arch", "base" (a dir with config.json + model.safetensors), "inputs" (safetensors),
"adapters": [{"dir", "name", "safetensors"}], optional "fusions": [{"dir", "adapters", "safetensors"}]}. Writes
WORKDIR/outputs.safetensors: one last_hidden_state per adapter name, computed with `model.load_adapter(dir)` +
`set_active_adapters(name)`, and per fusion ("fusion:<name>") with `load_adapter_fusion(dir)` + its Fuse active.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch

import adapters
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, BertModel, RobertaModel

CLASSES = {"bert": BertModel, "roberta": RobertaModel}  # built without a pooler; other archs: AutoModel


def main(workdir: Path) -> None:
    logging.getLogger("adapters").setLevel(logging.ERROR)
    request = json.loads((workdir / "request.json").read_text())
    if request["arch"] in CLASSES:
        config = AutoConfig.from_pretrained(request["base"])
        config._attn_implementation = "eager"
        model = CLASSES[request["arch"]](config, add_pooling_layer=False)
        model.load_state_dict(load_file(str(Path(request["base"]) / "model.safetensors")), strict=False)
    else:
        model = AutoModel.from_pretrained(request["base"], attn_implementation="eager")
    model.eval()
    adapters.init(model)
    inputs = load_file(request["inputs"])
    outputs = {}
    for entry in request["adapters"]:
        name = model.load_adapter(entry["dir"], use_safetensors=entry["safetensors"])
        assert name == entry["name"], (name, entry["name"])
        model.set_active_adapters(name)
        with torch.no_grad():
            outputs[name] = model(**inputs).last_hidden_state.contiguous()
    for entry in request.get("fusions", []):  # AdapterFusion directories over adapters loaded above
        name = model.load_adapter_fusion(entry["dir"], use_safetensors=entry.get("safetensors", False))
        model.set_active_adapters(adapters.Fuse(*entry["adapters"]))
        with torch.no_grad():
            outputs[f"fusion:{name}"] = model(**inputs).last_hidden_state.contiguous()
    save_file(outputs, str(workdir / "outputs.safetensors"))
    print(f"loaded {len(outputs)} adapters with adapters {adapters.__version__}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
