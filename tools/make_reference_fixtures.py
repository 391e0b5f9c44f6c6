#!/usr/bin/env python
"""Generate reference fixtures for adapterkit from the real AdapterHub `adapters` package.

Run inside the reference venv (see tools/make_reference_fixtures.sh), which pins
adapters / transformers 4.57.x / torch. It writes tests/fixtures/adapters_ref/:

  manifest.json
  <arch>/base/config.json             tiny model config (config.to_json_file)
  <arch>/base/model.safetensors       plain transformers state_dict of <Arch>Model(add_pooling_layer=False)
  <arch>/base/expected.safetensors    last_hidden_state of the base model (no adapter)
  <arch>/inputs.safetensors           input_ids, attention_mask (batch 3 x seq 7)
  <arch>/<case>/adapter_config.json   adapters config .to_dict()
  <arch>/<case>/adapter.safetensors   all parameters of adapter <case>, full model.state_dict() key names
  <arch>/<case>/expected.safetensors  last_hidden_state with adapter <case> active (eval mode)

Everything is deterministic (fixed seeds). No weights are downloaded.
"""

from __future__ import annotations

import adapters
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

import fixture_common as fc
from fixture_common import BATCH, INIT_STD, MIN_DIFF, PAD_TAIL, SEQ, is_scale_param, owner_type, shape_of, write_json

OUT = fc.REF_DIR
COMMON_CFG = fc.TINY_BERT

ARCHS = {
    "bert": dict(config_cls=BertConfig, model_cls=BertModel, extra={}),
    "roberta": dict(config_cls=RobertaConfig, model_cls=RobertaModel, extra={"pad_token_id": 1}),
}

# (case name, config class, kwargs). The case index (position in this list) seeds the
# parameter randomisation: torch.manual_seed(1234 + index).
CASES = fc.ADAPTER_CASES


def make_config(arch: str):
    spec = ARCHS[arch]
    return fc.eager_config(spec["config_cls"], **COMMON_CFG, **spec["extra"])


def build_base_model(arch: str, cfg, state_dict=None):
    model = ARCHS[arch]["model_cls"](cfg, add_pooling_layer=False)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    return model


def main():
    fc.deterministic()

    manifest = {
        "generator": "tools/make_reference_fixtures.py",
        "versions": fc.versions(),
        "model": {
            "config": dict(COMMON_CFG, attn_implementation="eager"),
            "per_arch_extra": {a: ARCHS[a]["extra"] for a in ARCHS},
            "classes": {a: ARCHS[a]["model_cls"].__name__ for a in ARCHS},
            "add_pooling_layer": False,
            "base_init": "default transformers init (initializer_range=0.2) after torch.manual_seed(0)",
        },
        "inputs": {
            "batch": BATCH,
            "seq": SEQ,
            "padded_tail_per_row": PAD_TAIL,
            "ids_seed": 42,
            "note": "padded positions have mask 0 and id = pad_token_id; no token_type_ids / position_ids passed",
        },
        "randomisation": {
            "seed": "torch.manual_seed(1234 + case_index) after add_adapter, params in model.state_dict() order",
            "default": f"param.normal_(0, {INIT_STD})",
            "scale_params": f"param.normal_(0, {INIT_STD}).add_(1)  (IA3 lora_B vectors, learned bottleneck `scaling`)",
        },
        "min_abs_diff_vs_base": MIN_DIFF,
        "archs": {},
    }

    for arch in ARCHS:
        cfg = make_config(arch)
        torch.manual_seed(0)
        base = build_base_model(arch, cfg)
        base_sd = fc.detached(base.state_dict())

        arch_dir = OUT / arch
        (arch_dir / "base").mkdir(parents=True, exist_ok=True)
        cfg.to_json_file(str(arch_dir / "base" / "config.json"))
        save_file(base_sd, str(arch_dir / "base" / "model.safetensors"))

        ids, mask = fc.padded_ids(cfg.pad_token_id, cfg.vocab_size)
        inputs = {"input_ids": ids, "attention_mask": mask}
        save_file(inputs, str(arch_dir / "inputs.safetensors"))

        base_out = fc.forward(base, inputs)
        save_file({"last_hidden_state": base_out}, str(arch_dir / "base" / "expected.safetensors"))

        arch_entry = {
            "model_class": ARCHS[arch]["model_cls"].__name__,
            "pad_token_id": cfg.pad_token_id,
            "base_keys": {k: shape_of(v) for k, v in base_sd.items()},
            "cases": {},
        }
        print(f"== {arch}: {len(base_sd)} base tensors, pad_token_id={cfg.pad_token_id}")
        print(f"   input_ids={ids.tolist()}")

        for case_idx, (name, cfg_cls, kwargs) in enumerate(CASES):
            adapter_cfg = cfg_cls(**kwargs)
            model = build_base_model(arch, make_config(arch), base_sd)
            adapters.init(model)
            before = set(model.state_dict().keys())
            model.add_adapter(name, config=adapter_cfg)
            model.set_active_adapters(name)
            model.eval()

            sd = model.state_dict()
            new_keys = [k for k in sd.keys() if k not in before]
            assert new_keys, f"{arch}/{name}: add_adapter added no parameters"
            # adapters.init only adds `prompt_tuning.base_model_embeddings.weight`, an alias of the
            # word embeddings (no new data); all plain transformers key names are kept.
            extra = set(before) - set(base_sd.keys())
            assert set(base_sd.keys()) <= set(before), f"{arch}/{name}: adapters.init renamed base keys"
            assert extra <= {"prompt_tuning.base_model_embeddings.weight"}, f"{arch}/{name}: unexpected {extra}"
            params = dict(model.named_parameters())
            for k in new_keys:
                assert k in params, f"{arch}/{name}: new state_dict entry {k} is not a parameter"
                assert f".{name}." in f".{k}.", f"{arch}/{name}: key {k} lacks the adapter name"

            treatments = fc.randomise(params, new_keys, 1234 + case_idx,
                                      lambda k: is_scale_param(k, owner_type(model, k)))

            out = fc.forward(model, inputs)
            diff = (out - base_out).abs().max().item()
            assert diff > MIN_DIFF, f"{arch}/{name}: adapter does not change the output (max diff {diff})"

            # sanity: deactivating the adapter reproduces the base output
            model.set_active_adapters(None)
            off = fc.forward(model, inputs)
            off_diff = (off - base_out).abs().max().item()
            assert off_diff < 1e-5, f"{arch}/{name}: inactive adapter changes output ({off_diff})"
            model.set_active_adapters(name)

            adapter_sd = fc.detached(model.state_dict(), new_keys)
            case_dir = arch_dir / name
            case_dir.mkdir(parents=True, exist_ok=True)
            write_json(case_dir / "adapter_config.json", adapter_cfg.to_dict())
            save_file(adapter_sd, str(case_dir / "adapter.safetensors"))
            save_file({"last_hidden_state": out}, str(case_dir / "expected.safetensors"))

            print(f"-- {arch}/{name} [{cfg_cls.__name__}({kwargs})] max|adapter-base|={diff:.4f}")
            for k in new_keys:
                print(f"     {treatments[k]:16s} {k} {tuple(adapter_sd[k].shape)} <{owner_type(model, k)}>")

            arch_entry["cases"][name] = {
                "case_index": case_idx,
                "config_class": cfg_cls.__name__,
                "config_kwargs": kwargs,
                "seed": 1234 + case_idx,
                "max_abs_diff_vs_base": diff,
                "params": {
                    k: {"shape": shape_of(adapter_sd[k]), "init": treatments[k], "module": owner_type(model, k)}
                    for k in new_keys
                },
            }

        manifest["archs"][arch] = arch_entry

    fc.finish(OUT, manifest, 2 * 1024 * 1024, "fixtures exceed 2 MB")


if __name__ == "__main__":
    main()
