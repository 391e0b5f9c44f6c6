#!/usr/bin/env python
"""Reference fixtures for VeRA and DvoRA, made with the real `adapters` package (run in .venv-ref; see
tools/make_reference_fixtures.sh). Writes tests/fixtures/adapters_vera/.

The package's saved VeRA / DvoRA files lack the frozen shared A and B (its own reloads change the outputs), so the
comparison is made in one process: build the adapter on the tiny base models of make_reference_fixtures.py
(BERT, RoBERTa) and make_arch_fixtures.py (GPT-2, Llama), randomise its trained tensors, and save ALL of them
(frozen pair included) in a neutral layout, with the outputs:

  <arch>/<case>/tensors.safetensors   shared.lora_A (r, in), shared.lora_B (out, r): the frozen pair;
                                      layers.<i>.<q|k|v>.d (r), .b (out): the diagonals of the package's vera_D /
                                      vera_B (their off-diagonals are zero: asserted); DvoRA also .m (out)
  <arch>/<case>/expected.safetensors  last_hidden_state (eval mode)
  manifest.json                       cases, configs, what the package refuses (and its error), the output change
                                      its own save / reload causes, and its adapter_summary on roberta-base

Randomisation (torch.manual_seed(SEED + case index) after add_adapter): d, b ~ N(0, 0.5) on the diagonals; m
(DvoRA) times 1 + N(0, 0.2). The frozen pair stays as the package initialised it (Kaiming-uniform).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import adapters
from adapters.methods.lora import LoRALayer, Vera

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402
import make_arch_fixtures as archs  # noqa: E402  (no side effects on import)
import make_reference_fixtures as ref  # noqa: E402

OUT = fc.FIXTURES / "adapters_vera"
SEED = 9100
SIZE_LIMIT = 400 * 1024
STD = 0.5

CASES = [  # (name, config class, kwargs, archs)
    ("vera", "VeraConfig", {}, ("bert", "roberta", "gpt2", "llama")),
    ("vera_qkv_alpha", "VeraConfig", {"r": 4, "alpha": 8, "attn_matrices": ["q", "k", "v"]}, ("bert", "roberta")),
    ("vera_ffn", "VeraConfig", {"intermediate_lora": True}, ("bert",)),
    ("vera_kv", "VeraConfig", {"attn_matrices": ["k", "v"]}, ("llama",)),
    ("dvora", "DvoRAConfig", {}, ("bert", "roberta", "gpt2", "llama")),
    ("dvora_alpha", "DvoRAConfig", {"r": 4, "alpha": 8}, ("bert", "roberta")),
    ("dvora_kv", "DvoRAConfig", {"attn_matrices": ["k", "v"]}, ("llama",)),
]


def base(arch: str):
    """(model factory, inputs, base output, base state dict) of the tiny base of `arch`, as the other generators
    saved it."""
    if arch in ref.ARCHS:
        d = ref.OUT / arch
        sd = load_file(str(d / "base" / "model.safetensors"))
        make = lambda: ref.build_base_model(arch, ref.make_config(arch), sd)  # noqa: E731
    else:
        d = archs.OUT / arch
        sd = load_file(str(d / "base" / "model.safetensors"))
        make = lambda: archs.build(arch, sd)  # noqa: E731 (then adapters.init, then drop_spurious_biases)
    inputs = load_file(str(d / "inputs.safetensors"))
    out = load_file(str(d / "base" / "expected.safetensors"))["last_hidden_state"]
    return make, inputs, out, sd


def vera_modules(model, name: str):
    """[(layer index, attn key, Vera module)] in model order."""
    found = []
    for path, module in model.named_modules():
        if isinstance(module, LoRALayer) and name in module.loras and isinstance(module.loras[name], Vera):
            layer = int(re.search(r"\.(\d+)\.", path).group(1))
            found.append((layer, module.attn_key, module.loras[name]))
    return found


@torch.no_grad()
def randomise(model, name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    shared = model.base_model.shared_parameters[name]
    tensors = {"shared.lora_A": shared["lora_A"], "shared.lora_B": shared["lora_B"]}
    for layer, key, vera in vera_modules(model, name):
        for attr, short in (("vera_D", "d"), ("vera_B", "b")):
            matrix = getattr(vera, attr)
            assert torch.equal(matrix, torch.diag(torch.diagonal(matrix))), "off-diagonal entries at init"
            diagonal = torch.randn(matrix.shape[0]) * STD
            matrix.copy_(torch.diag(diagonal))
            tensors[f"layers.{layer}.{key}.{short}"] = diagonal
        if vera.use_dora:
            vera.m.weight.mul_(1 + torch.randn(vera.m.weight.shape) * 0.2)
            tensors[f"layers.{layer}.{key}.m"] = vera.m.weight.reshape(-1)
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}


def reload_diff(make, inputs, model, name: str, expected) -> float:
    """How far the package's own save / load (into a fresh model, other RNG state) moves the output."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_adapter(tmp, name)
        torch.manual_seed(777)
        fresh = make()
        adapters.init(fresh)
        fresh.load_adapter(tmp, load_as=name, set_active=True)
        fresh.eval()
        return (fc.forward(fresh, inputs) - expected).abs().max().item()


def summary_rows() -> dict:
    """The package's adapter_summary #param on the roberta-base shape."""
    from transformers import RobertaConfig, RobertaModel
    torch.manual_seed(0)
    model = RobertaModel(RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                                       layer_norm_eps=1e-5))
    adapters.init(model)
    for name in ("vera", "dvora"):
        model.add_adapter(name, config=name)
    return {r["name"]: {"#param": r["#param"], "train": r.get("train")} for r in model.adapter_summary(as_dict=True)}


def main() -> None:
    fc.deterministic()
    manifest = {"generator": "tools/make_vera_fixtures.py", "versions": fc.versions(), "seed": SEED,
                "randomisation": f"after add_adapter: torch.manual_seed({SEED} + case index); per Vera module "
                                 f"in model order: d then b diagonals ~ N(0, {STD}), DvoRA m *= 1 + N(0, 0.2)",
                "cases": {}, "refused": {}, "package_reload_diff": {}}
    for index, (case, cls_name, kwargs, arch_list) in enumerate(CASES):
        manifest["cases"][case] = {"config_class": cls_name, "kwargs": kwargs, "archs": {}}
        for arch in arch_list:
            make, inputs, base_out, base_sd = base(arch)
            torch.manual_seed(SEED + index)  # the package draws the frozen pair from the global generator
            model = make()
            adapters.init(model)
            archs.drop_spurious_biases(model, base_sd)
            assert (fc.forward(model, inputs) - base_out).abs().max().item() < 1e-5  # (GPT-2: 4e-7 off its file)
            try:
                model.add_adapter(case, config=getattr(adapters, cls_name)(**kwargs), set_active=True)
                model.eval()
                tensors = randomise(model, case, SEED + index)
                out = fc.forward(model, inputs)
            except Exception as error:  # the package's own failure: recorded, not hidden
                manifest["refused"][f"{arch}/{case}"] = f"{type(error).__name__}: {error}"[:300]
                print(f"-- {arch}/{case}: refused: {type(error).__name__}: {error}"[:200])
                continue
            diff = (out - base_out).abs().max().item()
            assert diff > fc.MIN_DIFF, f"{arch}/{case}: no change ({diff})"
            target = OUT / arch / case
            target.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(target / "tensors.safetensors"))
            save_file({"last_hidden_state": out}, str(target / "expected.safetensors"))
            config = model.adapters_config.match(case, adapters.LoRAConfig).to_dict()
            manifest["cases"][case]["archs"][arch] = {"config": config, "max_abs_diff_vs_base": diff}
            manifest["package_reload_diff"][f"{arch}/{case}"] = reload_diff(make, inputs, model, case, out)
            print(f"-- {arch}/{case}: diff vs base {diff:.4f}, "
                  f"package reload diff {manifest['package_reload_diff'][f'{arch}/{case}']:.4f}")
    manifest["roberta_base_summary"] = summary_rows()
    fc.finish(OUT, manifest, SIZE_LIMIT, "VeRA fixtures too large")


if __name__ == "__main__":
    main()
