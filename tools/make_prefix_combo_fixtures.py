#!/usr/bin/env python
"""Reference fixtures for the prefix-tuning combinations (MAM, UniPELT, flat prefixes) from the real `adapters`
package: on DeBERTa and DeBERTa-v2, whose attention computes its own scores (adapterkit reaches it through hooks,
sites/own_attention.py), and UniPELT on GPT-2, whose gated LoRA on the fused c_attn keeps one gate with one head per
matrix.

Run inside the reference venv: `.venv-ref/bin/python tools/make_prefix_combo_fixtures.py`. It reuses the base
models and inputs of tools/make_arch_fixtures.py (tests/fixtures/adapters_ref_archs/<arch>/) and writes
tests/fixtures/adapters_ref_prefix_combos/<arch>/<case>/{adapter_config.json, adapter.safetensors,
expected.safetensors} plus manifest.json, the same layout. Deterministic; nothing is downloaded.
"""

from __future__ import annotations

import shutil

import adapters
from adapters import LoRAConfig, MAMConfig, ParBnConfig, PrefixTuningConfig, SeqBnConfig, UniPELTConfig
from safetensors.torch import load_file, save_file
from transformers import DebertaModel, DebertaV2Model, GPT2Model

import fixture_common as fc
from fixture_common import MIN_DIFF, forward, owner_type, write_json

BASES = fc.FIXTURES / "adapters_ref_archs"
OUT = fc.FIXTURES / "adapters_ref_prefix_combos"
MODELS = {"deberta": DebertaModel, "deberta-v2": DebertaV2Model, "gpt2": GPT2Model}
# the packages' default sizes, with smaller prefix MLPs (bottleneck 8) to keep the files small
CASES = [
    ("mam", MAMConfig, {"prefix_tuning": PrefixTuningConfig(bottleneck_size=8),
                        "adapter": ParBnConfig(scaling=4.0)}),
    ("unipelt", UniPELTConfig, {"prefix_tuning": PrefixTuningConfig(prefix_length=10, bottleneck_size=8),
                                "adapter": SeqBnConfig(reduction_factor=16, use_gating=True),
                                "lora": LoRAConfig(r=8, alpha=2, use_gating=True)}),
    ("prefix_tuning_flat", PrefixTuningConfig, {"prefix_length": 4, "flat": True}),
]


def is_scale_param(key: str) -> bool:
    return key.endswith(".scaling")


def main() -> None:
    fc.deterministic()
    if OUT.exists():
        shutil.rmtree(OUT)
    manifest = {"generator": "tools/make_prefix_combo_fixtures.py", "versions": fc.versions(),
                "bases": "tests/fixtures/adapters_ref_archs/<arch>/base and inputs.safetensors",
                "randomisation": {"seed": "torch.manual_seed(2345 + case_index), params in state_dict order",
                                  "default": f"normal(0, {fc.INIT_STD})"},
                "archs": {}}
    for arch, model_cls in MODELS.items():
        inputs = load_file(str(BASES / arch / "inputs.safetensors"))
        base_out = load_file(str(BASES / arch / "base" / "expected.safetensors"))["last_hidden_state"]
        entry = manifest["archs"][arch] = {"model_class": model_cls.__name__, "cases": {}}
        for index, (name, cfg_cls, kwargs) in enumerate(CASES):
            if arch == "gpt2" and name != "unipelt":
                continue  # GPT-2's prefix cases are in make_arch_fixtures.py; here its fused gated LoRA
            model = model_cls.from_pretrained(BASES / arch / "base", attn_implementation="eager").eval()
            base_keys = set(model.state_dict())
            adapters.init(model)
            # `adapters`' LoRA wrapper adds a random bias to DeBERTa's bias-free in_proj (make_arch_fixtures.py)
            for module_name, module in model.named_modules():
                if getattr(module, "bias", None) is not None and f"{module_name}.bias" not in base_keys \
                        and f"{module_name}.weight" in base_keys:
                    module.bias = None
            assert (forward(model, inputs) - base_out).abs().max().item() < 1e-5
            before = set(model.state_dict())
            adapter_cfg = cfg_cls(**kwargs)
            model.add_adapter(name, config=adapter_cfg)
            model.set_active_adapters(name)
            model.eval()
            new_keys = [canonical for canonical, _ in fc.group_new_tensors(model, before)]
            params = dict(model.named_parameters(remove_duplicate=False))
            fc.randomise(params, new_keys, 2345 + index, is_scale_param)
            out = forward(model, inputs)
            diff = (out - base_out).abs().max().item()
            assert diff > MIN_DIFF, f"{arch}/{name}: the adapter does not change the output ({diff})"
            case_dir = OUT / arch / name
            write_json(case_dir / "adapter_config.json", adapter_cfg.to_dict())
            save_file(fc.detached(model.state_dict(), new_keys), str(case_dir / "adapter.safetensors"))
            save_file({"last_hidden_state": out}, str(case_dir / "expected.safetensors"))
            entry["cases"][name] = {"seed": 2345 + index, "config_class": cfg_cls.__name__, "config_kwargs": {k: v.to_dict() if hasattr(v, "to_dict") else v
                                                                      for k, v in kwargs.items()},
                                    "max_abs_diff_vs_base": diff,
                                    "params": {k: [list(params[k].shape), owner_type(model, k)] for k in new_keys}}
            print(f"-- {arch}/{name}: max|adapter-base|={diff:.4f}, {len(new_keys)} tensors")
    fc.finish(OUT, manifest, 0.5 * 1024 * 1024, "fixtures exceed 0.5 MB")


if __name__ == "__main__":
    main()
