#!/usr/bin/env python
"""Reference fixtures for `average_head` from the real AdapterHub `adapters` package (flexible-head BERT).

Run in the reference venv (the one tools/make_reference_fixtures.sh builds):

    .venv-ref/bin/python tools/make_average_head_fixtures.py

On the tiny BERT of tests/fixtures/adapters_heads/bert (base model and inputs), each case adds its source heads,
randomises each (normal(0, INIT_STD), 1-d weights +1, after torch.manual_seed(300 + 10 * case index + head index);
a decoder tied to the input embeddings untouched), averages them with `model.average_head(...)` and records the
averaged head. It writes tests/fixtures/adapters_average_head/:

  manifest.json
  <case>/<source>/head_config.json, model_head.safetensors   each source head (`save_head`, AdapterHub format)
  <case>/average.json            average_head's arguments (head_list, weights, normalize_weights)
  <case>/expected.safetensors    the averaged head's outputs on the inputs (eval mode)
  <case>/weights.safetensors     the averaged head's state dict (tied parameters left out)
"""

from __future__ import annotations

import json
import shutil

import torch
from adapters import BertAdapterModel
from safetensors.torch import load_file, save_file
from transformers import BertConfig

import fixture_common as fc
from fixture_common import INIT_STD

OUT = fc.FIXTURES / "adapters_average_head"
BASE = fc.FIXTURES / "adapters_heads" / "bert"

# (case, add_<kind>_head method, {source: kwargs}, average_head keyword arguments besides head_list)
CASES = [
    ("cls_weighted", "add_classification_head",
     {"c0": {"num_labels": 3}, "c1": {"num_labels": 3}}, {"weights": [0.7, 0.3]}),
    ("cls_unnormalised", "add_classification_head", {"c0": {"num_labels": 2, "layers": 1},
                                                     "c1": {"num_labels": 2, "layers": 1}},
     {"weights": [2.0, -1.0], "normalize_weights": False}),
    ("tagging_equal", "add_tagging_head", {f"t{i}": {"num_labels": 4} for i in range(3)}, {}),
    ("qa_three", "add_qa_head", {f"q{i}": {} for i in range(3)}, {"weights": [1.0, 2.0, 3.0]}),
    ("masked_lm_tied", "add_masked_lm_head", {"m0": {}, "m1": {}}, {"weights": [0.6, 0.4]}),
]


def load_base():
    config = BertConfig.from_pretrained(BASE / "base")
    config._attn_implementation = "eager"
    model = BertAdapterModel(config)
    missing, unexpected = model.base_model.load_state_dict(load_file(BASE / "base" / "model.safetensors"),
                                                           strict=False)
    allowed = ("position_ids", "token_type_ids", "prompt_tuning.")  # adapters.init's prompt-tuning alias of the embeddings
    assert not unexpected and all(any(a in k for a in allowed) for k in missing), (missing, unexpected)
    return model.eval()


def randomise(head, shared: set[int], seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if p.data_ptr() in shared:
                continue
            p.normal_(0.0, INIT_STD)
            if p.dim() == 1 and name.endswith("weight"):
                p.add_(1.0)


def outputs_of(out) -> dict[str, torch.Tensor]:
    keys = ("logits", "start_logits", "end_logits")
    return {k: out[k].detach().clone().contiguous() for k in keys if k in out and out[k] is not None}


@torch.no_grad()
def main() -> None:
    fc.deterministic()
    shutil.rmtree(OUT, ignore_errors=True)
    inputs = load_file(BASE / "inputs.safetensors")
    manifest = {"generator": "tools/make_average_head_fixtures.py", "versions": fc.versions(),
                "base": "tests/fixtures/adapters_heads/bert", "cases": {}}
    for index, (case, method, sources, average) in enumerate(CASES):
        model = load_base()
        shared = {p.data_ptr() for p in model.base_model.parameters()}
        directory = OUT / case
        for offset, (name, kwargs) in enumerate(sources.items()):
            getattr(model, method)(name, **kwargs)
            randomise(model.heads[name], shared, 300 + 10 * index + offset)
            (directory / name).mkdir(parents=True)
            model.save_head(str(directory / name), name, use_safetensors=True)
        model.average_head("avg", list(sources), **average)
        model.eval()
        out = outputs_of(model(**inputs, head="avg"))
        first = outputs_of(model(**inputs, head=next(iter(sources))))
        diff = max((out[k] - first[k]).abs().max().item() for k in out)
        assert diff > fc.MIN_DIFF, f"{case}: the average is the first head ({diff})"
        head = model.heads["avg"]
        weights = {k: v for k, v in head.state_dict().items() if v.data_ptr() not in shared}
        tied = sorted(k for k, v in head.state_dict().items() if v.data_ptr() in shared)
        save_file(fc.detached(weights), str(directory / "weights.safetensors"))
        save_file(out, str(directory / "expected.safetensors"))
        fc.write_json(directory / "average.json", {"head_list": list(sources), **average})
        manifest["cases"][case] = {"method": method, "sources": sources, "average": average, "tied": tied,
                                   "max_abs_diff_vs_first": diff}
        print(f"-- {case}: max|avg-first|={diff:.4f} tied={tied}")
    fc.finish(OUT, json.loads(json.dumps(manifest, default=str)), 400 * 1024, "average-head fixtures exceed 400 KB")


if __name__ == "__main__":
    main()
