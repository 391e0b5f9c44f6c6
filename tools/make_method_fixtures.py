#!/usr/bin/env python
"""Reference fixtures for more adapter methods (prefix tuning, MAM, UniPELT, Compacter, gating), made with the
real AdapterHub `adapters` package.

Run inside the reference venv after tools/make_reference_fixtures.py (see tools/make_reference_fixtures.sh). It
reuses that script's tiny base models and inputs (tests/fixtures/adapters_ref/<arch>/{base,inputs.safetensors}),
loading them rather than regenerating, and writes, per arch in {bert, roberta}:

  <arch>/<case>/adapter_config.json     adapters config .to_dict()
  <arch>/<case>/adapter.safetensors     every adapter parameter once, under its model.state_dict() name
                                        (canonical name for tensors that appear under several names, see manifest)
  <arch>/<case>/expected.safetensors    last_hidden_state with the adapter active (eval mode), and for gated
                                        cases the gating scores under gating.<adapter>.<layer_id>.<location>
  <arch>/<case>/gating_locations.json   (gated cases) {gating key: shape}
  <arch>/prefix_tuning/ejected.safetensors
                                        after model.eject_prefix_tuning("prefix_tuning"): the flat prefix
                                        parameter(s) and last_hidden_state
  manifest_methods.json

Expected outputs are computed in the same process right after randomising (the adapters package drops the shared
PHM rule of Compacter when saving, so nothing goes through save/load). Deterministic: fixed seeds, one thread.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import adapters
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402
import make_reference_fixtures as ref  # noqa: E402  (its tiny base models; no side effects on import)
from fixture_common import INIT_STD, MIN_DIFF, shape_of  # noqa: E402

OUT = ref.OUT
SEED_BASE = 4321
SIZE_LIMIT = 1024 * 1024  # all new files together

PREFIX = {"prefix_length": 5, "bottleneck_size": 16}

# (case name, `adapters` config class name, kwargs); a kwarg value {"class": ..., "kwargs": ...} is a nested config.
# The case index seeds the randomisation: torch.manual_seed(SEED_BASE + index).
CASES = [
    ("prefix_tuning", "PrefixTuningConfig", dict(PREFIX)),
    ("prefix_tuning_flat", "PrefixTuningConfig", {"prefix_length": 5, "flat": True}),
    (
        "prefix_tuning_gated",
        "PrefixTuningConfig",
        dict(PREFIX, use_gating=True, shared_gating=False),
    ),
    (
        "mam",
        "MAMConfig",
        {
            "prefix_tuning": {"class": "PrefixTuningConfig", "kwargs": dict(PREFIX)},
            "adapter": {"class": "ParBnConfig", "kwargs": {}},
        },
    ),
    (
        "unipelt",
        "UniPELTConfig",
        {
            "prefix_tuning": {"class": "PrefixTuningConfig", "kwargs": dict(PREFIX)},
            "adapter": {"class": "SeqBnConfig", "kwargs": {"reduction_factor": 4}},
            "lora": {"class": "LoRAConfig", "kwargs": {"r": 4}},
        },
    ),
    ("compacter", "CompacterConfig", {"reduction_factor": 4, "phm_dim": 4}),
    ("compacter_pp", "CompacterPlusPlusConfig", {"reduction_factor": 4, "phm_dim": 4}),
    ("seq_bn_gated", "SeqBnConfig", {"use_gating": True}),
    ("lora_gated", "LoRAConfig", {"use_gating": True}),
]
GATED = {"prefix_tuning_gated", "unipelt", "seq_bn_gated", "lora_gated"}
EJECT_CASE = "prefix_tuning"


def build_config(cls_name: str, kwargs: dict):
    resolved = {
        k: build_config(v["class"], v["kwargs"]) if isinstance(v, dict) and "class" in v else v
        for k, v in kwargs.items()
    }
    return getattr(adapters, cls_name)(**resolved)


@torch.no_grad()
def run(model, inputs, gating: bool = False):
    kwargs = {"output_adapter_gating_scores": True} if gating else {}
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs)
    hidden = out.last_hidden_state.detach().clone().contiguous()
    if not gating:
        return hidden, {}
    scores = {}
    for adapter_name, per_layer in out["adapter_gating_scores"].items():
        for layer_id, per_loc in sorted(per_layer.items()):
            for loc, arr in sorted(per_loc.items()):
                scores[f"gating.{adapter_name}.{layer_id}.{loc}"] = torch.from_numpy(arr.copy()).float().contiguous()
    return hidden, scores


def main():
    fc.deterministic()

    manifest = {
        "generator": "tools/make_method_fixtures.py",
        "versions": fc.versions(),
        "base": "reuses <arch>/base and <arch>/inputs.safetensors from tools/make_reference_fixtures.py (manifest.json)",
        "randomisation": {
            "seed": f"torch.manual_seed({SEED_BASE} + case_index) after add_adapter",
            "order": "each distinct new tensor once, in order of first appearance in model.state_dict() "
            "(includes prefix modules, gates and shared_parameters.<name>.*)",
            "default": f"param.normal_(0, {INIT_STD})",
            "scale_params": f"param.normal_(0, {INIT_STD}).add_(1)  (learned bottleneck `scaling`; none in these cases)",
        },
        "min_abs_diff_vs_base": MIN_DIFF,
        "key_notes": {
            "aliases": "prefix tensors are stored once under the canonical key "
            "prefix_tuning.prefix_tunings.<name>.<location>.*; the same tensors are also in model.state_dict() "
            "as encoder.layer.<i>.attention.self.prefix_tuning.pool.prefix_tunings.<name>.<location>.* "
            "(listed per param under `aliases`)",
            "shared_parameters": "Compacter's shared PHM rule: model.base_model.shared_parameters[<name>] "
            "(ParameterDict), stored as shared_parameters.<name>.<param> (also its model.state_dict() name)",
            "gating": "expected.safetensors keys gating.<adapter>.<layer_id>.<location>: float32, "
            "from forward(output_adapter_gating_scores=True) -> out['adapter_gating_scores']",
        },
        "cases": [
            {"name": n, "index": i, "seed": SEED_BASE + i, "config_class": c, "config_kwargs": kw}
            for i, (n, c, kw) in enumerate(CASES)
        ],
        "archs": {},
    }

    written: list[Path] = []

    for arch in ref.ARCHS:
        arch_dir = OUT / arch
        cfg = ref.make_config(arch)
        base_cfg_on_disk = json.loads((arch_dir / "base" / "config.json").read_text())
        for k, v in fc.TINY_BERT.items():
            assert base_cfg_on_disk[k] == v, f"{arch}: base config {k} differs from generator"
        base_sd = load_file(str(arch_dir / "base" / "model.safetensors"))
        inputs = load_file(str(arch_dir / "inputs.safetensors"))
        base_out = load_file(str(arch_dir / "base" / "expected.safetensors"))["last_hidden_state"]

        base = ref.build_base_model(arch, cfg, base_sd)
        check, _ = run(base, inputs)
        assert torch.equal(check, base_out), f"{arch}: stored base output not reproduced"
        del base

        arch_entry = {"cases": {}}
        print(f"== {arch}")

        for case_idx, (name, cls_name, kwargs) in enumerate(CASES):
            adapter_cfg = build_config(cls_name, kwargs)
            model = ref.build_base_model(arch, ref.make_config(arch), base_sd)
            adapters.init(model)
            before = set(model.state_dict().keys())
            model.add_adapter(name, config=adapter_cfg)
            model.set_active_adapters(name)
            model.eval()

            groups = fc.group_new_tensors(model, before)
            assert groups, f"{arch}/{name}: add_adapter added no parameters"
            all_params = dict(model.named_parameters(remove_duplicate=False))
            for canon, keys in groups:
                for k in keys:
                    assert k in all_params, f"{arch}/{name}: new state_dict entry {k} is not a parameter"
                    assert f".{name}." in f".{k}.", f"{arch}/{name}: key {k} lacks the adapter name"
            # every parameter reachable from the model that is new must be covered (nothing left at init values)
            new_param_ids = {id(p) for k, p in all_params.items() if k not in before}
            covered = {id(all_params[c]) for c, _ in groups}
            assert new_param_ids == covered, f"{arch}/{name}: parameters outside state_dict"
            shared = model.base_model.shared_parameters
            if name in shared:
                for pname, p in shared[name].items():
                    assert id(p) in covered, f"{arch}/{name}: shared param {pname} not covered"
                    assert f"shared_parameters.{name}.{pname}" in {c for c, _ in groups}

            treatments = fc.randomise(all_params, [c for c, _ in groups], SEED_BASE + case_idx,
                                      lambda c: fc.is_scale_param(c, fc.owner_type(model, c)))

            out, _ = run(model, inputs)
            diff = (out - base_out).abs().max().item()
            assert diff > MIN_DIFF, f"{arch}/{name}: adapter does not change the output (max diff {diff})"

            out_g, gating = run(model, inputs, gating=True)
            assert torch.equal(out_g, out), f"{arch}/{name}: output_adapter_gating_scores changes the output"
            if name in GATED:
                assert gating, f"{arch}/{name}: gated case returned no gating scores"
            else:
                # Quirk of adapters 1.3.0: BottleneckLayer.compose_single stores layer_output[-1] as the "gating
                # score" even without a gate, i.e. the adapter's up-projection output (batch x seq x hidden).
                # Not saved; recorded in the manifest.
                bogus = {k: shape_of(v) for k, v in gating.items()}
                assert all(s == list(out.shape) for s in bogus.values()), f"{arch}/{name}: unexpected {bogus}"
                gating = {}

            # prefix ids: which slice of the pool output each layer uses
            prefix_ids = {}
            for i, layer in enumerate(model.encoder.layer):
                pt = layer.attention.self.prefix_tuning
                if name in pt.prefixes:
                    prefix_ids[str(i)] = {"location_key": pt.location_key, "prefix_id": pt.prefixes[name]}

            model.set_active_adapters(None)
            off, _ = run(model, inputs)
            off_diff = (off - base_out).abs().max().item()
            assert off_diff < 1e-5, f"{arch}/{name}: inactive adapter changes output ({off_diff})"
            model.set_active_adapters(name)

            sd = model.state_dict()
            adapter_sd = fc.detached(sd, [c for c, _ in groups])
            case_dir = arch_dir / name
            case_dir.mkdir(parents=True, exist_ok=True)
            fc.write_json(case_dir / "adapter_config.json", adapter_cfg.to_dict())
            save_file(adapter_sd, str(case_dir / "adapter.safetensors"))
            save_file({"last_hidden_state": out, **gating}, str(case_dir / "expected.safetensors"))
            written += [case_dir / "adapter_config.json", case_dir / "adapter.safetensors",
                        case_dir / "expected.safetensors"]
            if gating:
                fc.write_json(case_dir / "gating_locations.json", {k: shape_of(v) for k, v in gating.items()})
                written.append(case_dir / "gating_locations.json")

            print(f"-- {arch}/{name} [{cls_name}] max|adapter-base|={diff:.4f}")
            for canon, keys in groups:
                extra = f" (+{len(keys) - 1} aliases)" if len(keys) > 1 else ""
                print(f"     {treatments[canon]:16s} {canon} {tuple(adapter_sd[canon].shape)} "
                      f"<{fc.owner_type(model, canon)}>{extra}")
            for k, v in gating.items():
                print(f"     gating {k} {tuple(v.shape)} {[round(x, 4) for x in v.flatten().tolist()]}")

            entry = {
                "case_index": case_idx,
                "seed": SEED_BASE + case_idx,
                "config_class": cls_name,
                "config_kwargs": kwargs,
                "max_abs_diff_vs_base": diff,
                "params": {
                    c: {
                        "shape": shape_of(adapter_sd[c]),
                        "init": treatments[c],
                        "module": fc.owner_type(model, c),
                        "aliases": [k for k in keys if k != c],
                    }
                    for c, keys in groups
                },
                "gating_scores": {k: shape_of(v) for k, v in gating.items()},
            }
            if prefix_ids:
                entry["prefix_ids"] = prefix_ids
            if name not in GATED and bogus:
                entry["ungated_scores_not_saved"] = {
                    "keys": bogus,
                    "note": "adapters returns the bottleneck up-projection output here (no gate); not a gate value",
                }

            if name == EJECT_CASE:
                model.eject_prefix_tuning(name)
                ej_groups = fc.group_new_tensors(model, before)
                ej_sd = model.state_dict()
                flat = fc.detached(ej_sd, [c for c, _ in ej_groups])
                assert all(fc.owner_type(model, c) == "FlatPrefixTuning" for c in flat), list(flat)
                ej_out, _ = run(model, inputs)
                ej_diff = (ej_out - out).abs().max().item()
                assert ej_diff < 1e-5, f"{arch}/{name}: ejected prefix changes output ({ej_diff})"
                save_file({**flat, "last_hidden_state": ej_out}, str(case_dir / "ejected.safetensors"))
                written.append(case_dir / "ejected.safetensors")
                entry["ejected"] = {
                    "file": "ejected.safetensors",
                    "params": {
                        c: {"shape": shape_of(flat[c]), "aliases": [k for k in keys if k != c]}
                        for c, keys in ej_groups
                    },
                    "max_abs_diff_vs_expected": ej_diff,
                }
                print(f"     ejected: {[(c, tuple(v.shape)) for c, v in flat.items()]} "
                      f"max|ejected-expected|={ej_diff:.2e}")

            arch_entry["cases"][name] = entry

        manifest["archs"][arch] = arch_entry

    manifest_path = OUT / "manifest_methods.json"
    fc.write_json(manifest_path, manifest)
    written.append(manifest_path)

    total = sum(p.stat().st_size for p in written)
    print(f"new fixture files: {len(written)}, {total} bytes ({total / 1024:.1f} KiB)")
    assert total < SIZE_LIMIT, "new fixtures exceed 1 MB"


if __name__ == "__main__":
    main()
