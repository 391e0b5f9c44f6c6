"""The loop the "package's own files" fixture generators share (make_encdec_fixtures.py, make_xmod_fixtures.py):
per case a fresh adapter-initialised copy of the base, the adapter added, randomised, run, and saved with the
package's own `save_adapter`, beside the expected output. Run in the reference venv; no side effects on import."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import adapters
import torch
from safetensors.torch import save_file

import fixture_common as fc
import make_arch_fixtures as archfx


def _save(model, out: Path, name: str, entry: dict) -> None:
    try:
        model.save_adapter(str(out), name, use_safetensors=True)  # the package's own files
    except RuntimeError as exc:  # its invertible adapter under several names (shared memory): safetensors refuses
        model.save_adapter(str(out), name)  # its default .bin, whose tensors then go to safetensors
        saved = torch.load(out / "pytorch_adapter.bin", weights_only=True)
        (out / "pytorch_adapter.bin").unlink()
        save_file({k: v.clone().contiguous() for k, v in saved.items()}, str(out / "adapter.safetensors"))
        entry["saved_as"] = ("the package's pytorch_adapter.bin, converted (its safetensors save fails: "
                             f"{str(exc).split(':')[0].strip()})")


def generate(out: Path, generator: str, build: Callable, inputs: dict, forward: Callable, cases: list,
             output_name: str, corrected: Callable | None = None, max_bytes: float = 1024 * 1024) -> None:
    """Write `out`: base/ (save_pretrained + expected), inputs, and per case the package's files + expected.

    `build(state_dict=None)` gives the tiny base in eval mode; `forward(model, inputs)` its output tensor, saved
    under `output_name`. `corrected(model, config)` -> (why, output) where the package computes another function
    than it means to (saved as expected_corrected), or None.
    """
    fc.deterministic()
    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(0)
    base = build()
    base_sd = fc.detached(base.state_dict())
    base.save_pretrained(out / "base", safe_serialization=True)
    save_file(inputs, str(out / "inputs.safetensors"))
    base_out = forward(base, inputs)
    save_file({output_name: base_out}, str(out / "base" / "expected.safetensors"))
    manifest = {"generator": generator, "versions": fc.versions(),
                "inputs": {"batch": fc.BATCH, "seq": fc.SEQ, "padded_tail_per_row": fc.PAD_TAIL, "seed": 42},
                "randomisation": {"seed": "torch.manual_seed(1234 + case_index), params in state_dict order",
                                  "default": f"normal(0, {fc.INIT_STD})",
                                  "scale_params": f"1 + normal(0, {fc.INIT_STD})"},
                "cases": {}}
    for index, (name, cfg_cls, kwargs) in enumerate(cases):
        adapter_cfg = cfg_cls(**kwargs)
        model = build(base_sd)
        adapters.init(model)
        assert (forward(model, inputs) - base_out).abs().max().item() < 1e-5, "adapters.init changes the output"
        before = set(model.state_dict())
        model.add_adapter(name, config=adapter_cfg)
        model.set_active_adapters(name)
        model.eval()
        new_keys = [canonical for canonical, _ in fc.group_new_tensors(model, before)]
        params = dict(model.named_parameters(remove_duplicate=False))
        fc.randomise(params, new_keys, 1234 + index, lambda k: archfx.is_scale_param(k, adapter_cfg))
        result = forward(model, inputs)
        diff = (result - base_out).abs().max().item()
        assert diff > fc.MIN_DIFF, f"{name}: the adapter does not change the output ({diff})"
        entry = manifest["cases"][name] = {"seed": 1234 + index, "config_class": cfg_cls.__name__,
                                           "config_kwargs": kwargs, "max_abs_diff_vs_base": diff,
                                           "params": len(new_keys)}
        _save(model, out / name, name, entry)
        save_file({output_name: result}, str(out / name / "expected.safetensors"))
        fixed = corrected(model, adapter_cfg) if corrected else None
        if fixed is not None:
            entry["corrected"], fixed_out = fixed
            save_file({output_name: fixed_out}, str(out / name / "expected_corrected.safetensors"))
        print(f"-- {name}: max|adapter-base|={diff:.4f}, {len(new_keys)} tensors")
    fc.finish(out, manifest, max_bytes, f"fixtures exceed {max_bytes / 2**20:.2f} MB")
