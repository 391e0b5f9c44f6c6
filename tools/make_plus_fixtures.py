#!/usr/bin/env python
"""Reference fixtures for AdapterPlus (stochastic depth), AdapterDrop (skip_layers) and init_weights_seed, made with
the real `adapters` 1.3.0 package.

Run inside the reference venv (tools/make_reference_fixtures.sh). It reuses the tiny BERT / RoBERTa bases and inputs
of tools/make_reference_fixtures.py and writes tests/fixtures/adapters_plus/:

  <arch>/<case>/adapter_config.json   adapters config .to_dict()
  <arch>/<case>/adapter.safetensors   the randomised adapter parameters, model.state_dict() names
  <arch>/<case>/expected.safetensors  last_hidden_state (eval); skip_<i>: with set_active_adapters(case,
                                      skip_layers=[i]); train_seed_<s> (cases with stochastic depth): model.train(),
                                      torch.manual_seed(s), forward (the base has no dropout, so the only draws are
                                      the adapters' StochasticDepth rows)
  <arch>/init_<case>/adapter.safetensors  the adapter's weights right after add_adapter with init_weights_seed
                                      (no randomisation): the package's seeded init
  manifest.json

The package needs torchvision for stochastic_depth > 0 (`torchvision.ops.StochasticDepth(p, "row")`). Only that
pure-Python file is loaded, from a torchvision wheel on sys.path (pip install --no-deps --target DIR
torchvision==0.28.0, then PYTHONPATH=DIR), never the package's compiled ops, which need a matching torch build.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402
import make_reference_fixtures as ref  # noqa: E402

import adapters  # noqa: E402
import adapters.methods.modeling as modeling  # noqa: E402

OUT = fc.FIXTURES / "adapters_plus"
SEED_BASE = 8100
TRAIN_SEEDS = [0, 1, 2, 3]
SIZE_LIMIT = 400 * 1024
PREFIX = {"prefix_length": 3, "bottleneck_size": 8}

# (case name, config class name, kwargs). Randomised cases: torch.manual_seed(SEED_BASE + index) after add_adapter.
CASES = [
    ("adapterplus", "AdapterPlusConfig", {}),
    ("adapterplus_rf4_sd05", "AdapterPlusConfig", {"reduction_factor": 4, "stochastic_depth": 0.5}),
    ("seq_bn_rf4_sd03", "SeqBnConfig", {"reduction_factor": 4, "stochastic_depth": 0.3}),
    ("lora", "LoRAConfig", {"r": 4}),
    ("prefix_tuning", "PrefixTuningConfig", dict(PREFIX)),
]
# (case name, config class name, kwargs): adapters added with init_weights_seed, weights saved as initialised
INIT_CASES = [
    ("seq_bn", "SeqBnConfig", {"reduction_factor": 4, "init_weights_seed": 42}),
    ("adapterplus", "AdapterPlusConfig", {"reduction_factor": 4, "init_weights_seed": 42}),
    ("lora", "LoRAConfig", {"r": 4, "init_weights_seed": 42}),
    ("lora_qkv_ffn", "LoRAConfig", {"r": 4, "attn_matrices": ["q", "k", "v"], "intermediate_lora": True,
                                    "output_lora": True, "init_weights_seed": 7}),
    ("prefix_tuning", "PrefixTuningConfig", dict(PREFIX, init_weights_seed=42)),
]


def load_stochastic_depth() -> None:
    """torchvision's StochasticDepth without importing torchvision (its compiled ops do not load on this torch)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchvision is not on sys.path; see this script's docstring")
    path = Path(list(spec.submodule_search_locations)[0]) / "ops" / "stochastic_depth.py"
    for name in ("torchvision", "torchvision.ops"):
        sys.modules.setdefault(name, types.ModuleType(name))
    utils = types.ModuleType("torchvision.utils")
    utils._log_api_usage_once = lambda obj: None
    sys.modules["torchvision.utils"] = utils
    module_spec = importlib.util.spec_from_file_location("torchvision.ops.stochastic_depth", path)
    module = importlib.util.module_from_spec(module_spec)
    module.__package__ = "torchvision.ops"
    sys.modules["torchvision.ops.stochastic_depth"] = module
    module_spec.loader.exec_module(module)
    modeling.is_torchvision_available = lambda: True


@torch.no_grad()
def run(model, inputs) -> torch.Tensor:
    return fc.forward(model, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]})


def new_params(model, before: set[str]) -> dict[str, torch.Tensor]:
    groups = fc.group_new_tensors(model, before)
    return {canon: dict(model.named_parameters(remove_duplicate=False))[canon] for canon, _ in groups}


def summary_counts() -> dict:
    """The package's adapter_summary #param of AdapterPlus on a roberta-base-shaped model (meta device)."""
    from transformers import RobertaConfig, RobertaModel
    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5)
    with torch.device("meta"):
        model = RobertaModel(config)
        adapters.init(model)
        model.add_adapter("adapterplus", config=adapters.AdapterPlusConfig())
    rows = model.adapter_summary(as_dict=True)
    return {row["name"]: row["#param"] for row in rows if row["name"] != "Full model"} | {
        "full_model": next(row["#param"] for row in rows if row["name"] == "Full model")}


def main():
    fc.deterministic()
    load_stochastic_depth()
    manifest = {
        "generator": "tools/make_plus_fixtures.py", "versions": fc.versions(),
        "base": "reuses tests/fixtures/adapters_ref/<arch>/{base,inputs.safetensors}",
        "randomisation": f"torch.manual_seed({SEED_BASE} + case_index) after add_adapter; each new tensor "
                         f"normal_(0, {fc.INIT_STD}) in state_dict order (+1 for `scaling`)",
        "train": "model.train(); torch.manual_seed(seed); forward under no_grad (the base has dropout 0)",
        "cases": [{"name": n, "class": c, "kwargs": kw} for n, c, kw in CASES],
        "init_cases": [{"name": n, "class": c, "kwargs": kw} for n, c, kw in INIT_CASES],
        "archs": {},
        "summary_roberta_base": summary_counts(),
    }
    for arch in ref.ARCHS:
        src = ref.OUT / arch
        base_sd = load_file(str(src / "base" / "model.safetensors"))
        inputs = load_file(str(src / "inputs.safetensors"))
        base_out = load_file(str(src / "base" / "expected.safetensors"))["last_hidden_state"]
        entry = {}
        for index, (name, cls_name, kwargs) in enumerate(CASES):
            config = getattr(adapters, cls_name)(**kwargs)
            model = ref.build_base_model(arch, ref.make_config(arch), base_sd)
            adapters.init(model)
            before = set(model.state_dict())
            model.add_adapter(name, config=config)
            model.set_active_adapters(name)
            model.eval()
            params = new_params(model, before)
            fc.randomise(params, list(params), SEED_BASE + index,
                         lambda k: fc.is_scale_param(k, fc.owner_type(model, k)))
            expected = {"last_hidden_state": run(model, inputs)}
            assert (expected["last_hidden_state"] - base_out).abs().max() > fc.MIN_DIFF, (arch, name)
            for layer in range(2):
                model.set_active_adapters(name, skip_layers=[layer])
                expected[f"skip_{layer}"] = run(model, inputs)
            model.set_active_adapters(name, skip_layers=[0, 1])
            assert torch.allclose(run(model, inputs), base_out, atol=1e-6), (arch, name, "all layers skipped")
            model.set_active_adapters(name)
            if config.get("stochastic_depth", 0.0) > 0:
                model.train()
                for seed in TRAIN_SEEDS:
                    torch.manual_seed(seed)
                    expected[f"train_seed_{seed}"] = run(model, inputs)
                model.eval()
            out = OUT / arch / name
            out.mkdir(parents=True, exist_ok=True)
            fc.write_json(out / "adapter_config.json", config.to_dict())
            save_file(fc.detached(params), str(out / "adapter.safetensors"))
            save_file(expected, str(out / "expected.safetensors"))
            entry[name] = sorted(expected)
            print(f"{arch}/{name}: {sorted(expected)}")
        for name, cls_name, kwargs in INIT_CASES:
            config = getattr(adapters, cls_name)(**kwargs)
            model = ref.build_base_model(arch, ref.make_config(arch), base_sd)
            adapters.init(model)
            before = set(model.state_dict())
            model.add_adapter(name, config=config)
            params = new_params(model, before)
            out = OUT / arch / f"init_{name}"
            out.mkdir(parents=True, exist_ok=True)
            fc.write_json(out / "adapter_config.json", config.to_dict())
            save_file(fc.detached(params), str(out / "adapter.safetensors"))
            entry[f"init_{name}"] = sorted(params)
        manifest["archs"][arch] = entry
    fc.finish(OUT, manifest, SIZE_LIMIT, "adapters_plus fixtures exceed 400 KB")


if __name__ == "__main__":
    main()
