#!/usr/bin/env python
"""Reference fixtures for prompt tuning, made with the real `adapters` package (run in .venv-ref, see
tools/make_reference_fixtures.sh).

Reuses the tiny BERT / RoBERTa bases and padded inputs of tools/make_reference_fixtures.py and writes, per arch:

  <arch>/<case>/adapter_config.json    the package's config .to_dict()
  <arch>/<case>/adapter.safetensors    the prompt, under its model.state_dict() name
  <arch>/<case>/expected.safetensors   last_hidden_state (prompt positions included, as the package returns it)
  <arch>/<case>/saved/                 model.save_adapter(...): the package's AdapterHub-format files
  manifest.json                        cases, seeds, versions, and the package's refusal on GPT-2 and Llama

The prompt is set to normal(0, 1) after add_adapter (torch.manual_seed(SEED + case index)). One thread, fixed seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import adapters
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402
import make_arch_fixtures as archs_ref  # noqa: E402
import make_reference_fixtures as ref  # noqa: E402

OUT = fc.FIXTURES / "adapters_prompt"
SEED = 9100
CASES = [
    ("prompt_tuning", {"prompt_length": 4}),
    ("prompt_tuning_after_bos", {"prompt_length": 3, "combine": "prefix_after_bos"}),
]


@torch.no_grad()
def run(model, inputs):
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return out.last_hidden_state.detach().clone().contiguous()


def main():
    fc.deterministic()
    manifest = {"generator": "tools/make_prompt_fixtures.py", "versions": fc.versions(),
                "base": "tests/fixtures/adapters_ref/<arch>/{base,inputs.safetensors}",
                "randomisation": f"torch.manual_seed({SEED} + case index); prompt_embedding.weight.normal_(0, 1)",
                "cases": {name: kwargs for name, kwargs in CASES}, "archs": {}, "refused": {}}
    for arch in ref.ARCHS:
        base_sd = load_file(str(ref.OUT / arch / "base" / "model.safetensors"))
        inputs = load_file(str(ref.OUT / arch / "inputs.safetensors"))
        base_out = load_file(str(ref.OUT / arch / "base" / "expected.safetensors"))["last_hidden_state"]
        entry = {}
        for index, (name, kwargs) in enumerate(CASES):
            model = ref.build_base_model(arch, ref.make_config(arch), base_sd)
            adapters.init(model)
            config = adapters.PromptTuningConfig(**kwargs)
            model.add_adapter(name, config=config)
            model.set_active_adapters(name)
            model.eval()
            key = f"prompt_tuning.prompt_tunings.{name}.prompt_embedding.weight"
            params = dict(model.named_parameters())
            new = [k for k in params if f".{name}." in f".{k}."]
            assert new == [key], f"{arch}/{name}: unexpected new parameters {new}"
            torch.manual_seed(SEED + index)
            with torch.no_grad():
                params[key].normal_(0.0, 1.0)
            out = run(model, inputs)
            length = kwargs["prompt_length"]
            assert out.shape[1] == base_out.shape[1] + length, f"{arch}/{name}: {tuple(out.shape)}"
            case_dir = OUT / arch / name
            case_dir.mkdir(parents=True, exist_ok=True)
            fc.write_json(case_dir / "adapter_config.json", config.to_dict())
            save_file({key: params[key].detach().clone().contiguous()}, str(case_dir / "adapter.safetensors"))
            save_file({"last_hidden_state": out}, str(case_dir / "expected.safetensors"))
            model.save_adapter(str(case_dir / "saved"), name, use_safetensors=True)
            reloaded = ref.build_base_model(arch, ref.make_config(arch), base_sd)
            adapters.init(reloaded)
            loaded = reloaded.load_adapter(str(case_dir / "saved"), use_safetensors=True)
            reloaded.set_active_adapters(loaded)
            assert torch.equal(run(reloaded.eval(), inputs), out), f"{arch}/{name}: package reload differs"
            entry[name] = {"seed": SEED + index, "shape": list(out.shape)}
            print(f"-- {arch}/{name} {tuple(out.shape)}")
        manifest["archs"][arch] = entry
    for arch in ("gpt2", "llama"):
        model = archs_ref.build(arch)
        adapters.init(model)
        try:
            model.add_adapter("prompt_tuning", config=adapters.PromptTuningConfig(prompt_length=4))
            manifest["refused"][arch] = None
        except Exception as error:  # the package's refusal, recorded as it words it
            manifest["refused"][arch] = f"{type(error).__name__}: {error}"
        print(f"-- {arch}: {manifest['refused'][arch]}")
    fc.write_json(OUT / "manifest.json", manifest)
    print(f"total {fc.tree_size(OUT)} bytes")


if __name__ == "__main__":
    main()
