#!/usr/bin/env python
"""Reference fixtures for `average_adapter` from the real AdapterHub `adapters` package.

Run in the reference venv (the one tools/make_reference_fixtures.sh builds):

    .venv-ref/bin/python tools/make_average_fixtures.py

On the tiny BERT of tests/fixtures/adapters_ref/bert (base model and inputs), each case adds two adapters of one
config, randomises them (normal(0, INIT_STD) after torch.manual_seed(1234 + case index); (IA)^3 vectors around 1),
averages them with `model.average_adapter(...)` and records the averaged adapter's output. It writes
tests/fixtures/adapters_average/:

  manifest.json
  <case>/adapter_config.json     the `adapters` config of the sources (and of the average)
  <case>/a.safetensors, b.safetensors   the source adapters' parameters (full state_dict names)
  <case>/average.json            average_adapter's arguments
  <case>/expected.safetensors    last_hidden_state with the averaged adapter active (eval mode)
"""

from __future__ import annotations

import shutil

import adapters
from adapters import (CompacterConfig, IA3Config, LoRAConfig, PrefixTuningConfig, SeqBnInvConfig)
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

import fixture_common as fc
from fixture_common import MIN_DIFF

OUT = fc.FIXTURES / "adapters_average"
BASE = fc.REF_DIR / "bert"

# (case, config class, config kwargs, average_adapter keyword arguments)
CASES = [
    ("seq_bn_inv_linear", SeqBnInvConfig, {}, {"weights": [0.7, 0.3]}),
    ("lora_linear_unnormalised", LoRAConfig, {}, {"weights": [2.0, -1.0], "normalize_weights": False}),
    ("lora_negate_b", LoRAConfig, {}, {"weights": [0.6, -0.4], "normalize_weights": False,
                                       "combine_strategy": "lora_linear_only_negate_b"}),
    ("lora_svd", LoRAConfig, {"r": 4, "alpha": 8},
     {"weights": [0.5, 0.5], "combine_strategy": "lora_delta_w_svd", "svd_rank": 4}),
    ("ia3_equal", IA3Config, {}, {}),
    ("prefix_linear", PrefixTuningConfig, {"prefix_length": 3, "bottleneck_size": 8, "use_gating": True},
     {"weights": [1.0, 3.0]}),
    ("compacter_linear", CompacterConfig, {"reduction_factor": 8}, {"weights": [0.25, 0.75]}),
]


def load_base():
    config = BertConfig.from_pretrained(BASE / "base")
    config._attn_implementation = "eager"
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(load_file(BASE / "base" / "model.safetensors"), strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), (missing, unexpected)
    return model.eval()


def main() -> None:
    fc.deterministic()
    shutil.rmtree(OUT, ignore_errors=True)
    inputs = load_file(BASE / "inputs.safetensors")
    manifest = {"generator": "tools/make_average_fixtures.py", "versions": fc.versions(),
                "base": "tests/fixtures/adapters_ref/bert", "cases": {}}
    for index, (case, cls, kwargs, average) in enumerate(CASES):
        model = load_base()
        adapters.init(model)
        base_out = fc.forward(model, inputs)
        config = cls(**kwargs)
        keys = {}
        for name in ("a", "b"):
            before = set(model.state_dict())
            model.add_adapter(name, config=config)
            keys[name] = [canonical for canonical, _ in fc.group_new_tensors(model, before)]
        params = dict(model.named_parameters(remove_duplicate=False))
        fc.randomise(params, keys["a"] + keys["b"], 1234 + index,
                     lambda k: fc.is_scale_param(k, fc.owner_type(model, k)))
        model.average_adapter("avg", ["a", "b"], **average)
        model.set_active_adapters("avg")
        model.eval()
        out = fc.forward(model, inputs)
        diff = (out - base_out).abs().max().item()
        assert diff > MIN_DIFF, f"{case}: the averaged adapter does not change the output ({diff})"
        directory = OUT / case
        directory.mkdir(parents=True)
        fc.write_json(directory / "adapter_config.json", config.to_dict())
        fc.write_json(directory / "average.json", average)
        sd = model.state_dict()
        for name in ("a", "b"):
            save_file(fc.detached(sd, keys[name]), str(directory / f"{name}.safetensors"))
        save_file({"last_hidden_state": out}, str(directory / "expected.safetensors"))
        manifest["cases"][case] = {"seed": 1234 + index, "config_class": cls.__name__, "config_kwargs": kwargs,
                                   "average": average, "max_abs_diff_vs_base": diff}
        print(f"-- {case}: max|avg-base|={diff:.4f}")
    fc.finish(OUT, manifest, 256 * 1024, "average fixtures exceed 256 KB")


if __name__ == "__main__":
    main()
