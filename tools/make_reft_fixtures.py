#!/usr/bin/env python
"""Reference fixtures for ReFT (loreft / noreft / direft), made with the real `adapters` package 1.3.0.

Run inside the reference venv (see tools/make_reference_fixtures.sh):

    .venv-ref/bin/python tools/make_reft_fixtures.py

Reuses the tiny bases and padded inputs of make_reference_fixtures.py (bert, roberta) and make_arch_fixtures.py
(gpt2, llama) and writes tests/fixtures/adapters_reft/<arch>/<case>/:

  state.safetensors     every new state_dict entry of the adapter (parameters after randomisation, and the frozen
                        orthogonal-parametrisation bases), full model.state_dict() names
  expected.safetensors  last_hidden_state with the adapter active (eval mode), computed before any save
  hub/                  model.save_adapter(...) of the package (AdapterHub format), loreft / noreft only: its
                        DiReFT files are incomplete (reloaded outputs differ; measured below, in the manifest)
  manifest.json         versions, cases, seeds, the package's reload differences

Deterministic: fixed seeds, one thread.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import adapters
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixture_common as fc  # noqa: E402
import make_arch_fixtures as archfx  # noqa: E402
import make_reference_fixtures as ref  # noqa: E402

OUT = fc.FIXTURES / "adapters_reft"
SEED_BASE = 9100
SIZE_LIMIT = 400 * 1024

# (case, config class, kwargs, archs); the index seeds the randomisation: torch.manual_seed(SEED_BASE + index)
CASES = [
    ("loreft", "LoReftConfig", {"r": 2, "prefix_positions": 3, "suffix_positions": 2}, None),
    ("noreft", "NoReftConfig", {"prefix_positions": 2, "suffix_positions": 2, "tied_weights": True,
                                "non_linearity": "tanh"}, None),
    ("direft", "DiReftConfig", {"r": 2, "prefix_positions": 3, "suffix_positions": 1}, None),
    # prefix and suffix overlap in the shortest row (4 real tokens): the suffix edit wins there
    ("loreft_overlap", "LoReftConfig", {"prefix_positions": 3, "suffix_positions": 3, "layers": [1]}, ("bert",)),
]
HUB_CASES = {"loreft", "noreft", "loreft_overlap"}
ARCHS = ("bert", "roberta", "gpt2", "llama")


def base_dir(arch: str) -> Path:
    return (ref.OUT if arch in ref.ARCHS else archfx.OUT) / arch


def build(arch: str, state_dict):
    if arch in ref.ARCHS:
        return ref.build_base_model(arch, ref.make_config(arch), state_dict)
    return archfx.build(arch, state_dict)


@torch.no_grad()
def run(model, inputs) -> torch.Tensor:
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state.clone()


def main() -> None:
    fc.deterministic()
    if OUT.exists():
        shutil.rmtree(OUT)
    manifest = {"generator": "tools/make_reft_fixtures.py", "versions": fc.versions(),
                "randomisation": f"torch.manual_seed({SEED_BASE} + case index), then every new parameter in "
                                 f"state_dict order ~ normal(0, {fc.INIT_STD}), the diagonal of orthogonal "
                                 "`original`s kept (torch reads its signs); buffers (orthogonal bases) as built",
                "cases": [{"name": n, "index": i, "config_class": c, "config_kwargs": kw}
                          for i, (n, c, kw, _) in enumerate(CASES)],
                "archs": {}}
    for arch in ARCHS:
        directory = base_dir(arch)
        base_sd = load_file(str(directory / "base" / "model.safetensors"))
        inputs = load_file(str(directory / "inputs.safetensors"))
        base_out = run(build(arch, base_sd), inputs)
        entry = manifest["archs"][arch] = {"base": str(directory.relative_to(fc.ROOT)), "cases": {}}
        for index, (name, cls_name, kwargs, only) in enumerate(CASES):
            if only is not None and arch not in only:
                continue
            model = build(arch, base_sd)
            adapters.init(model)
            before = set(model.state_dict())
            torch.manual_seed(SEED_BASE + index)
            model.add_adapter(name, config=getattr(adapters, cls_name)(**kwargs))
            model.set_active_adapters(name)
            model.eval()
            params = dict(model.named_parameters())
            new = [k for k in model.state_dict() if k not in before]
            assert new, f"{arch}/{name}: no new tensors"
            torch.manual_seed(SEED_BASE + index)
            with torch.no_grad():
                for k in new:
                    if k in params:
                        orthogonal = k.endswith("parametrizations.weight.original")
                        keep = params[k].diagonal().clone() if orthogonal else None
                        params[k].normal_(0.0, fc.INIT_STD)
                        if orthogonal:
                            # torch's orthogonal map reads the signs of this diagonal through .int(): noise
                            # there (|x| < 1) would zero the directions, so it keeps its initial -1s
                            params[k].diagonal().copy_(keep)
            out = run(model, inputs)
            diff = (out - base_out).abs().max().item()
            assert diff > fc.MIN_DIFF, f"{arch}/{name}: ReFT does not change the output ({diff})"
            case_dir = OUT / arch / name
            case_dir.mkdir(parents=True)
            sd = model.state_dict()
            save_file(fc.detached(sd, new), str(case_dir / "state.safetensors"))
            save_file({"last_hidden_state": out.contiguous()}, str(case_dir / "expected.safetensors"))
            with tempfile.TemporaryDirectory() as tmp:
                model.save_adapter(tmp, name, use_safetensors=True)
                reloaded = build(arch, base_sd)
                adapters.init(reloaded)
                reloaded.load_adapter(tmp, set_active=True, use_safetensors=True)
                reloaded.eval()
                reload_diff = (run(reloaded, inputs) - out).abs().max().item()
                if name in HUB_CASES:
                    assert reload_diff < 1e-6, f"{arch}/{name}: the package's own reload differs ({reload_diff})"
                    shutil.copytree(tmp, case_dir / "hub")
            entry["cases"][name] = {"index": index, "max_abs_diff_vs_base": diff,
                                    "package_reload_max_abs_diff": reload_diff,
                                    "tensors": {k: fc.shape_of(sd[k]) for k in new}}
            print(f"{arch}/{name}: |adapter - base| {diff:.4f}, package reload differs by {reload_diff:.2e}")
    fc.finish(OUT, manifest, SIZE_LIMIT, "ReFT fixtures exceed 400 KB")


if __name__ == "__main__":
    main()
