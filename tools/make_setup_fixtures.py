#!/usr/bin/env python
"""Generate adapter-setup fixtures with the real `adapters` package: `model.save_adapter_setup(...)` folders.

Run inside the reference venv (tools/make_reference_fixtures.sh). Writes tests/fixtures/adapters_setup/:

  manifest.json
  inputs.safetensors               input_ids, attention_mask (batch 3 x seq 7), reused from adapters_heads/bert
  <case>/setup/...                 what `save_adapter_setup(dir, setup, head_setup, use_safetensors=...)` writes
  <case>/expected.safetensors      last_hidden_state (and logits with a head) with the setup active (eval mode)

The base is the tiny BERT of tests/fixtures/adapters_heads/bert/base (weights loaded from there, not saved again).
Deterministic; nothing downloaded.
"""

from __future__ import annotations

import shutil

import torch
from adapters import BertAdapterModel, Fuse, LoRAConfig, SeqBnConfig
from adapters.composition import BatchSplit, Stack
from safetensors.torch import load_file, save_file
from transformers import BertConfig

import fixture_common as fc

OUT = fc.FIXTURES / "adapters_setup"
BASE = fc.FIXTURES / "adapters_heads" / "bert"
# (case, setup, head_setup, use_safetensors)
CASES = [
    ("stack_fuse", Stack(Fuse("a", "b"), "c"), "c", True),
    ("batch_split_bin", BatchSplit("a", "b", batch_sizes=[1, 2]), None, False),
]
# No Average case: the package divides an Average by N once more (a measured defect, see the README), so its
# outputs are not ours by design; Average's JSON form is checked in tests/test_adapter_setup.py.


def build() -> BertAdapterModel:
    torch.manual_seed(0)  # the adapters' own (random) init, before the noise below
    config = BertConfig.from_pretrained(str(BASE / "base"))
    config._attn_implementation = "eager"
    model = BertAdapterModel(config)
    result = model.base_model.load_state_dict(load_file(str(BASE / "base" / "model.safetensors")), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    model.add_adapter("a", config=SeqBnConfig(reduction_factor=4))
    model.add_adapter("b", config=SeqBnConfig(reduction_factor=8))
    model.add_adapter("c", config=LoRAConfig(r=4, alpha=8))
    model.add_adapter_fusion(Fuse("a", "b"))
    model.add_classification_head("c", num_labels=3)
    torch.manual_seed(4321)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter" in name or "lora" in name or name.startswith("heads."):
                p.add_(torch.randn_like(p) * fc.INIT_STD)
    return model.eval()


def main() -> None:
    fc.deterministic()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    inputs = load_file(str(BASE / "inputs.safetensors"))
    save_file(inputs, str(OUT / "inputs.safetensors"))
    model = build()
    manifest = {"versions": fc.versions(), "base": "adapters_heads/bert/base", "cases": {}}
    plain = fc.forward(model.base_model, inputs)
    for case, setup, head_setup, use_st in CASES:
        case_dir = OUT / case
        model.save_adapter_setup(str(case_dir / "setup"), setup, head_setup=head_setup, use_safetensors=use_st)
        model.set_active_adapters(setup)
        with torch.no_grad():
            expected = {"last_hidden_state": fc.forward(model.base_model, inputs)}
            if head_setup:
                expected["logits"] = model(**inputs, head=head_setup).logits.detach().contiguous()
        assert (expected["last_hidden_state"] - plain).abs().max() > fc.MIN_DIFF, case
        save_file(expected, str(case_dir / "expected.safetensors"))
        manifest["cases"][case] = {"setup": repr(setup), "head_setup": head_setup, "safetensors": use_st}
        model.set_active_adapters(None)
    fc.finish(OUT, manifest, 400e3, "setup fixtures over 400 KB")


if __name__ == "__main__":
    main()
