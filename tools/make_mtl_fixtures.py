#!/usr/bin/env python
"""Reference fixtures for MTL-LoRA ("mtl_lora") and the MultiTask block, made with the real `adapters` package.

Run inside the reference venv (see tools/make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_mtl_fixtures.py

It reuses the tiny base models and inputs of make_reference_fixtures.py (bert, roberta) and make_arch_fixtures.py
(gpt2, llama) and writes tests/fixtures/adapters_mtl_lora/<arch>/<case>/:

  <task>/adapter_config.json, <task>/adapter.safetensors   `model.save_adapter(dir, task,
                                        use_safetensors=True)` of each adapter, as the package writes them
  expected.safetensors                  last_hidden_state (eval mode) with the case's setup and task_ids
  manifest.json                         versions, cases, seeds, task ids, what the package refuses

Cases: "multitask" (three tasks sharing lora_A / lora_B via share_parameters, MultiTask active, one batch with
mixed task ids) and "lone" (one adapter active without MultiTask). Every adapter tensor is drawn once (a shared
tensor once for all tasks) after add_adapter / share_parameters: N(0, 0.2), the task-specific singular values
1 + N(0, 0.2). GPT-2: the package's forward fails for MTL-LoRA on the fused c_attn, so its cases target the FFN
(c_fc, c_proj). The manifest also records the package's NaN output once a mixing weight passes ~4.4 at the
default weights_sharpness (exp overflow). Deterministic: fixed seeds, one thread.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import adapters
import torch
import transformers
from adapters import MTLLoRAConfig
from adapters.composition import MultiTask
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402

OUT = fc.FIXTURES / "adapters_mtl_lora"
SEED = 9100
SIZE_LIMIT = 400 * 1024
TASKS = ["a", "b", "c"]
TASK_IDS = [2, 0, 1]

BASES = {
    "bert": (fc.REF_DIR / "bert", "BertModel", {"add_pooling_layer": False}),
    "roberta": (fc.REF_DIR / "roberta", "RobertaModel", {"add_pooling_layer": False}),
    "gpt2": (fc.FIXTURES / "adapters_ref_archs" / "gpt2", "GPT2Model", {}),
    "llama": (fc.FIXTURES / "adapters_ref_archs" / "llama", "LlamaModel", {}),
}
COMMON = {"r": 4, "alpha": 8, "n_up_projection": 2, "init_weights": "bert"}
TARGETS = {
    "bert": {"attn_matrices": ["q", "k", "v"], "output_lora": True},
    "roberta": {"attn_matrices": ["q", "v"], "intermediate_lora": True},
    "gpt2": {"selfattn_lora": False, "intermediate_lora": True, "output_lora": True},
    "llama": {"attn_matrices": ["q", "k", "v"]},  # grouped-query k / v (2 heads)
}
# (case, extra config fields, tasks, active setup)
CASES = [
    ("multitask", {}, TASKS, "multitask"),
    ("lone", {"n_up_projection": 3, "weights_sharpness": 0.5}, ["solo"], "solo"),
]


def load_base(arch: str):
    path, cls, kwargs = BASES[arch]
    model = getattr(transformers, cls).from_pretrained(path / "base", attn_implementation="eager", **kwargs)
    return model.eval(), load_file(str(path / "inputs.safetensors"))


@torch.no_grad()
def run(model, inputs, task_ids=None):
    extra = {} if task_ids is None else {"task_ids": torch.tensor(task_ids)}
    return model(**inputs, **extra).last_hidden_state.detach().clone().contiguous()


def summary_rows() -> dict:
    """adapter_summary counts on the roberta-base shape (built on the meta device: no weights)."""
    config = transformers.RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                        layer_norm_eps=1e-5)
    with torch.device("meta"):
        model = transformers.RobertaModel(config)
        adapters.init(model)
        model.add_adapter("mtl_lora", config="mtl_lora")
        model.add_adapter("mtl_lora_n3", config=MTLLoRAConfig(n_up_projection=3))
    return {row["name"]: [row["#param"], round(row["%param"], 3)] for row in model.adapter_summary(as_dict=True)}


def main() -> None:
    fc.deterministic()
    if OUT.exists():
        shutil.rmtree(OUT)
    manifest = {
        "generator": "tools/make_mtl_fixtures.py", "versions": fc.versions(), "tasks": TASKS, "task_ids": TASK_IDS,
        "randomisation": f"torch.manual_seed({SEED} + 10 * arch_index + case_index) after add_adapter and "
                         f"share_parameters; each distinct tensor once, normal(0, {fc.INIT_STD}); "
                         "task_specific.values 1 + normal",
        "cases": {}, "package_refuses": {}, "archs": list(BASES),
    }
    for a_idx, arch in enumerate(BASES):
        for c_idx, (case, extra, tasks, active) in enumerate(CASES):
            model, inputs = load_base(arch)
            base_out = run(model, inputs)
            adapters.init(model)
            config = MTLLoRAConfig(**{**COMMON, **TARGETS[arch], **extra})
            before = set(model.state_dict())
            for task in tasks:
                model.add_adapter(task, config=config)
            setup = MultiTask(*tasks) if active == "multitask" else active
            if active == "multitask":
                model.share_parameters(MultiTask(*tasks))
            model.set_active_adapters(setup)
            groups = fc.group_new_tensors(model, before)
            params = dict(model.named_parameters(remove_duplicate=False))
            fc.randomise(params, [c for c, _ in groups], SEED + 10 * a_idx + c_idx,
                         lambda k: k.endswith("task_specific.values"))
            ids = TASK_IDS if active == "multitask" else None
            out = run(model, inputs, ids)
            diff = (out - base_out).abs().max().item()
            assert diff > fc.MIN_DIFF, f"{arch}/{case}: the adapter does not change the output ({diff})"
            case_dir = OUT / arch / case
            if active == "multitask":  # each row is its task's adapter alone
                for row, task in enumerate(ids):
                    model.set_active_adapters(tasks[task])
                    alone = run(model, {k: v[row:row + 1] for k, v in inputs.items()})
                    assert (alone[0] - out[row]).abs().max() < 1e-5, f"{arch}: row {row} is not its task's"
                model.set_active_adapters(setup)
                shared = [k for k in model.state_dict() if ".shared_parameters." in k]
                assert shared, f"{arch}: share_parameters shared nothing"
            case_dir.mkdir(parents=True, exist_ok=True)
            for task in tasks:
                model.save_adapter(str(case_dir / task), task, use_safetensors=True)
            save_file({"last_hidden_state": out}, str(case_dir / "expected.safetensors"))
            manifest["cases"].setdefault(arch, {})[case] = {
                "config": config.to_dict(), "tasks": tasks, "setup": repr(setup), "task_ids": ids,
                "max_abs_diff_vs_base": diff}
        # the package refuses MTL-LoRA on GPT-2's fused c_attn (LoRAMergedLinear) and MultiTask there
        if arch == "gpt2":
            model, inputs = load_base(arch)
            adapters.init(model)
            model.add_adapter("x", config=MTLLoRAConfig(**COMMON))
            model.set_active_adapters("x")
            try:
                run(model, inputs)
            except Exception as error:  # noqa: BLE001 - recorded as the package's behaviour
                manifest["package_refuses"]["gpt2_c_attn"] = f"{type(error).__name__}: {error}"[:300]
            else:
                raise AssertionError("the package now runs MTL-LoRA on GPT-2's c_attn: generate a case for it")
    # the package's unshifted exp(w / sharpness) overflows: NaN output once a weight passes ~4.4 (sharpness 0.05)
    model, inputs = load_base("bert")
    adapters.init(model)
    model.add_adapter("x", config=MTLLoRAConfig(**COMMON))
    model.set_active_adapters("x")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weights"):
                p.fill_(5.0)
    overflow = run(model, inputs)
    manifest["package_nan_at_weights_5"] = bool(torch.isnan(overflow).any())
    assert manifest["package_nan_at_weights_5"], "the package no longer overflows; drop that README line"
    manifest["summary_roberta_base"] = summary_rows()
    fc.finish(OUT, manifest, SIZE_LIMIT, "MTL-LoRA fixtures too large")
    print(json.dumps(manifest["package_refuses"], indent=1))


if __name__ == "__main__":
    main()
