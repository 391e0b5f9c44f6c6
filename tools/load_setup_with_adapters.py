#!/usr/bin/env python
"""Load an adapter setup adapterkit saved (`save_adapter_setup(..., format="adapterhub")`) with the real `adapters`
package and record its output. Run by tests/test_adapter_setup.py in the reference venv:

    .venv-ref/bin/python tools/load_setup_with_adapters.py WORKDIR

WORKDIR/request.json: {"base" (config.json + model.safetensors of a BERT), "inputs" (safetensors), "setup" (the
saved folder), "safetensors"}. Writes WORKDIR/outputs.safetensors: last_hidden_state with the loaded setup active,
and WORKDIR/setup.txt: the setup the package read.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from adapters import BertAdapterModel
from safetensors.torch import load_file, save_file
from transformers import BertConfig


def main(workdir: Path) -> None:
    logging.getLogger("adapters").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    request = json.loads((workdir / "request.json").read_text())
    config = BertConfig.from_pretrained(request["base"])
    config._attn_implementation = "eager"
    model = BertAdapterModel(config)
    model.base_model.load_state_dict(load_file(str(Path(request["base"]) / "model.safetensors")), strict=False)
    setup, _ = model.load_adapter_setup(request["setup"], set_active=True, use_safetensors=request["safetensors"])
    model.eval()
    with torch.no_grad():
        out = model.base_model(**load_file(request["inputs"])).last_hidden_state
    save_file({"last_hidden_state": out.contiguous()}, str(workdir / "outputs.safetensors"))
    (workdir / "setup.txt").write_text(repr(setup))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
