#!/usr/bin/env python
"""Reference fixtures for DoRA (`DoRAConfig`, "dora"), made with the real `adapters` package 1.3.0.

Run inside the reference venv after make_reference_fixtures.py and make_arch_fixtures.py (their tiny bases are
reused, not stored again; see tools/make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_dora_fixtures.py

Writes tests/fixtures/adapters_dora/:

  manifest.json                       versions, cases, seeds, the cases the package fails on (with its error),
                                      and those where its output ignores the magnitude (`magnitude_ignored`)
  <arch>/<case>/saved/                exactly what `model.save_adapter(dir, case, use_safetensors=True)` wrote
                                      (adapter_config.json + adapter.safetensors: the AdapterHub format)
  <arch>/<case>/expected.safetensors  last_hidden_state with the adapter active (eval mode), computed before saving

The adapter parameters (A, B and the magnitude m) are randomised after add_adapter (m around its initial ||W||,
so the normalisation matters); one case per arch sets alpha != r, where the package's norm (of W + B A, unscaled)
differs from the norm of the weight it applies (W + (alpha/r) B A). Deterministic: fixed seeds, one thread.
"""

from __future__ import annotations

import shutil
import sys
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import adapters
from adapters import DoRAConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402
import make_arch_fixtures as arch_ref  # noqa: E402  (no side effects on import)
import make_reference_fixtures as ref  # noqa: E402
from fixture_common import INIT_STD, MIN_DIFF  # noqa: E402

OUT = fc.FIXTURES / "adapters_dora"
SEED_BASE = 5150
MAX_BYTES = 400 * 1024

# (case, DoRAConfig kwargs); the index seeds the randomisation: torch.manual_seed(SEED_BASE + index)
CASES = [
    ("dora", {}),
    ("dora_qkv_ffn_alpha", {"r": 4, "alpha": 12, "attn_matrices": ["q", "k", "v"], "intermediate_lora": True,
                            "output_lora": True}),
    ("dora_v_alpha", {"r": 2, "alpha": 6, "attn_matrices": ["v"]}),
]
ARCHS = ["bert", "roberta", "gpt2", "llama"]


def base(arch: str):
    """(model, inputs, base output) of the shared tiny base of `arch`."""
    if arch in ref.ARCHS:
        directory = ref.OUT / arch
        model = ref.build_base_model(arch, ref.make_config(arch), load_file(str(directory / "base" / "model.safetensors")))
    else:
        directory = arch_ref.OUT / arch
        model = arch_ref.build(arch, load_file(str(directory / "base" / "model.safetensors")))
    inputs = load_file(str(directory / "inputs.safetensors"))
    expected = load_file(str(directory / "base" / "expected.safetensors"))["last_hidden_state"]
    # (GPT-2 differs by rounding, 4e-7, from the output its generator stored)
    assert (fc.forward(model, inputs) - expected).abs().max() <= 1e-6, f"{arch}: stored base output not reproduced"
    return model, inputs, expected


def randomise(model, name: str, seed: int) -> None:
    """Every DoRA parameter in state_dict order: A, B ~ normal(0, INIT_STD); m *= 1 + normal(0, INIT_STD)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if f".loras.{name}." not in key:
                continue
            if key.endswith(".m.weight"):
                p.mul_(1 + torch.randn_like(p) * INIT_STD)
            else:
                p.normal_(0.0, INIT_STD)


@torch.no_grad()
def magnitude_ignored(model, inputs, out) -> bool:
    """Whether doubling every magnitude m leaves the output unchanged (the package's fused GPT-2 c_attn layer
    creates m but its forward never reads it)."""
    ms = [p for k, p in model.named_parameters() if k.endswith(".m.weight")]
    for p in ms:
        p.mul_(2)
    same = torch.equal(fc.forward(model, inputs), out)
    for p in ms:
        p.div_(2)
    return same


@torch.no_grad()
def merge_defects(model, name: str, inputs, out) -> dict:
    """What the package's merge_adapter / reset_adapter do here: how far the merged output is from the unmerged
    one (its merge drops alpha/r and leaves the bias unscaled), and how far reset leaves the weights from the base."""
    before = {k: v.clone() for k, v in model.state_dict().items() if f".{name}." not in k}
    try:
        model.merge_adapter(name)
        merged = (fc.forward(model, inputs) - out).abs().max().item()
        model.reset_adapter()
    except Exception as exc:  # noqa: BLE001 - recorded
        return {"error": error_summary(exc)}
    after = model.state_dict()
    return {"merged_minus_unmerged_max_abs": merged,
            "weights_after_reset_minus_base_max_abs": max((after[k] - v).abs().max().item() for k, v in before.items())}


def error_summary(exc: Exception) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {str(exc).splitlines()[0]} (at {Path(frame.filename).name}:{frame.lineno})"


def main() -> None:
    fc.deterministic()
    if OUT.exists():
        shutil.rmtree(OUT)
    manifest = {
        "generator": "tools/make_dora_fixtures.py",
        "versions": fc.versions(),
        "bases": {"bert": "adapters_ref/bert", "roberta": "adapters_ref/roberta", "gpt2": "adapters_ref_archs/gpt2",
                  "llama": "adapters_ref_archs/llama"},
        "randomisation": {"seed": f"torch.manual_seed({SEED_BASE} + case_index) after add_adapter",
                          "lora_A, lora_B": f"normal_(0, {INIT_STD})",
                          "m.weight": f"mul_(1 + randn * {INIT_STD})"},
        "cases": [{"name": n, "index": i, "config_kwargs": kw} for i, (n, kw) in enumerate(CASES)],
        "archs": {},
    }
    for arch in ARCHS:
        entry = {"cases": [], "fails": {}, "magnitude_ignored": []}
        print(f"== {arch}")
        for index, (name, kwargs) in enumerate(CASES):
            model, inputs, base_out = base(arch)
            adapters.init(model)
            try:
                model.add_adapter(name, config=DoRAConfig(**kwargs))
                model.set_active_adapters(name)
                model.eval()
                randomise(model, name, SEED_BASE + index)
                out = fc.forward(model, inputs)
            except Exception as exc:  # noqa: BLE001 - recorded: the package fails on this case here
                entry["fails"][name] = error_summary(exc)
                print(f"-- {arch}/{name}: fails ({entry['fails'][name]})")
                continue
            if magnitude_ignored(model, inputs, out):
                entry["magnitude_ignored"].append(name)
                print(f"-- {arch}/{name}: runs, but its output does not depend on m (plain LoRA)")
            diff = (out - base_out).abs().max().item()
            assert diff > MIN_DIFF, f"{arch}/{name}: adapter does not change the output ({diff})"
            case_dir = OUT / arch / name
            case_dir.mkdir(parents=True)
            model.save_adapter(str(case_dir / "saved"), name, use_safetensors=True)
            save_file({"last_hidden_state": out}, str(case_dir / "expected.safetensors"))
            entry["cases"].append(name)
            entry.setdefault("package_merge", {})[name] = merge_defects(model, name, inputs, out)
            print(f"{arch}/{name}: max |out - base| = {diff:.4f}")
        manifest["archs"][arch] = entry
    fc.finish(OUT, manifest, MAX_BYTES, "DoRA fixtures too large")


if __name__ == "__main__":
    main()
