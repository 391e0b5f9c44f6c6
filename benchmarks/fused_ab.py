"""adapterkit's LoRA steps with and without its fused node, interleaved in one round-robin.

Why: the fused node (methods/lora/fused.py) launches fewer kernels but runs a Python backward; on the CPU it is
faster, on a GPU, where the step is bound by the host, it was slower in two separate runs. This times both variants
in the same process and rounds (each case's `prepare` switches adapterkit's sites to its variant before its step;
every other round runs the cases in reverse order),
training and unmerged inference, with the plain forward, the floor and peft's LoRA cases beside them:

    python benchmarks/fused_ab.py --device cuda --out bench-out/fused_ab
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import common  # noqa: E402
import worker  # noqa: E402
from common import Shape  # noqa: E402
from timing import round_robin, summarise  # noqa: E402


def variant(library: str, key: str, shape: Shape, batch, fused: bool | None) -> common.Case:
    """`key` of `library` on a model of its own; for adapterkit, with its fused LoRA node (`fused`: on every device,
    for training too) or its hook path (`fused` False) set before each of its steps."""
    case = worker.library_cases(library, shape, batch).build(key)
    if fused is None:
        return case
    import adapterkit.methods.lora.fused as fused
    original = fused.fused_args
    here = torch.device(shape.device).type

    def prepare():
        fused.fused_args = original if fused else (lambda *a: None)
        fused.FUSED_TRAINING_DEVICES = (here,) if fused else ()
        case.prepare()
    return common.Case(case.step, prepare)


def run(shape: Shape, rounds: int, warmup: int, out: Path) -> dict:
    common.setup_process(shape)
    batch = common.make_batch(shape)
    cases = {("base", key): common.base_case(key, shape, batch) for key in ("plain_forward", "floor")}
    for key in ("lora_train", "lora_infer"):
        cases[("adapterkit", f"{key}, fused node")] = variant("adapterkit", key, shape, batch, True)
        cases[("adapterkit", f"{key}, hook path")] = variant("adapterkit", key, shape, batch, False)
        cases[("peft", key)] = variant("peft", key, shape, batch, None)
    import adapterkit.methods.lora.fused as fused
    saved = fused.fused_args, fused.FUSED_TRAINING_DEVICES
    try:
        times = round_robin(cases, rounds, warmup, shape.device, alternate=True)
    finally:  # the variants' `prepare` switched the module's globals
        fused.fused_args, fused.FUSED_TRAINING_DEVICES = saved
    stats = summarise(times, ("base", "plain_forward"))
    result = {"meta": {"shape": shape.to_dict(), "rounds": rounds, "warmup": warmup,
                       "versions": worker.environment(["adapterkit", "peft"])},
              "rows": [{"library": lib, "case": case, **s} for (lib, case), s in stats.items()]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "fused_ab.json").write_text(json.dumps(result, indent=1))
    lines = ["| library | case | median ms | × plain forward (median; min–max) |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {r['library']} | {r['case']} | {r['median_s'] * 1e3:.2f} | {r['ratio']:.3f} "
              f"({r['ratio_min']:.3f}–{r['ratio_max']:.3f}) |" for r in result["rows"]]
    (out / "fused_ab.md").write_text("\n".join(lines) + "\n")
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_shape_arguments(p)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench-out/fused_ab"))
    args = p.parse_args(argv)
    shape = common.shape_from_arguments(args)
    result = run(shape, args.rounds, args.warmup, args.out)
    print((args.out / "fused_ab.md").read_text())
    return result


if __name__ == "__main__":
    main()
