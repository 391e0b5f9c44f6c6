"""One benchmark process: speed, peak memory, scaling or quality for the libraries of *this* venv.

run_all.py calls these functions in-process for adapterkit and peft (transformers 5.x) and runs this file as a
subprocess with the reference venv's python for `adapters` (transformers 4.57), and for every peak-memory case
(a fresh process each, since a process's peak RSS never goes down). Results are JSON (--out).

    python benchmarks/worker.py speed --libraries adapterkit peft --shape '{"tiny": true}' --out r.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import timing  # noqa: E402
from common import SCALING_LAYERS, SCALING_SEQ, Shape  # noqa: E402


def library_cases(library: str, shape: Shape, batch):
    if library == "peft":
        from cases_peft import PeftCases
        return PeftCases(shape, batch)
    if library in ("adapterkit", "adapters"):
        from cases_hub import HubCases
        return HubCases(library, shape, batch)
    raise ValueError(f"unknown library {library!r}; known: adapterkit, peft, adapters")


def library_keys(library: str) -> tuple:
    if library == "peft":
        return importlib.import_module("cases_peft").KEYS
    return importlib.import_module("cases_hub").keys_for(library)


def environment(libraries) -> dict:
    import transformers
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    for lib in libraries:
        versions[lib] = getattr(importlib.import_module(lib), "__version__", "?")
    return versions


def build_cases(libraries, shape: Shape, keys=None) -> dict:
    """(library ("base" for cases without an adapter library), key) -> Case: every base case and every case of
    each library (only `keys` and the plain forward, if given)."""
    common.setup_process(shape)
    batch = common.make_batch(shape)
    cases = {("base", key): case for key, case in common.base_cases(shape, batch).items()
             if keys is None or key in keys or key == "plain_forward"}
    for library in libraries:
        builder = library_cases(library, shape, batch)
        for key in library_keys(library):
            if keys is None or key in keys:
                cases[(library, key)] = builder.build(key)
    return cases


def run_speed(libraries, shape: Shape, rounds: int, warmup: int, keys=None) -> dict:
    """Every base case and every case of each library, round-robin in this process; ratios to this process's
    plain forward. Rows: {library, case, median_s, ratio, ...}."""
    cases = build_cases(libraries, shape, keys)
    times = timing.round_robin(cases, rounds, warmup, shape.device)
    stats = timing.summarise(times, ("base", "plain_forward"))
    rows = [{"library": lib, "case": key, **s} for (lib, key), s in stats.items()]
    return {"shape": shape.to_dict(), "rounds": rounds, "versions": environment(libraries), "rows": rows}


def run_ops(libraries, shape: Shape, keys=None) -> dict:
    """Aten operations dispatched by one step of every case (opcount.py), AdamW with foreach as on CUDA."""
    import opcount
    common.ADAMW_FOREACH = True
    try:
        cases = build_cases(libraries, shape, keys)
        rows = [{"library": lib, "case": key, **opcount.count_case(case)} for (lib, key), case in cases.items()
                if common.KINDS[key] != "op"]
    finally:
        common.ADAMW_FOREACH = None
    return {"shape": shape.to_dict(), "versions": environment(libraries), "rows": rows}


def run_memory(library: str, key: str, shape: Shape, steps: int) -> dict:
    """Peak RSS (and peak CUDA memory) of a process that builds one case and runs it `steps` times. Call it in a
    fresh process: the peak includes importing torch/transformers and building the model."""
    common.setup_process(shape)
    batch = common.make_batch(shape)
    if library == "base":
        case = common.base_case(key, shape, batch)
    else:
        case = library_cases(library, shape, batch).build(key)
    for _ in range(steps):
        if case.prepare is not None:
            case.prepare()
        case.step()
    timing.synchronize(shape.device)
    return {"library": library, "case": key, "peak_rss_mb": timing.peak_rss_mb(),
            "peak_device_mb": timing.peak_device_mb(shape.device), "steps": steps}


def scaling_points(shape: Shape) -> list[tuple[int, int]]:
    """(seq, layers): the sequence-length sweep at the shape's depth, then the depth sweep at its length."""
    points = [(seq, shape.layers) for seq in SCALING_SEQ]
    points += [(shape.seq, layers) for layers in SCALING_LAYERS if (shape.seq, layers) not in points]
    return points


def run_scaling(libraries, shape: Shape, rounds: int, warmup: int, points=None) -> dict:
    """LoRA train step ratio to the plain forward at each (seq, layers) point (default: `scaling_points`), each
    point timed round-robin on its own."""
    rows = []
    for seq, layers in points or scaling_points(shape):
        point = shape.with_(seq=seq, layers=layers)
        result = run_speed(libraries, point, rounds, warmup, keys={"plain_forward", "lora_train"})
        base = next(r for r in result["rows"] if r["case"] == "plain_forward")
        rows += [{**r, "seq": seq, "layers": layers, "plain_forward_s": base["median_s"]}
                 for r in result["rows"] if r["case"] == "lora_train"]
    return {"shape": shape.to_dict(), "rounds": rounds, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["speed", "ops", "memory", "scaling", "quality"])
    parser.add_argument("--libraries", nargs="+", default=[])
    parser.add_argument("--case", help="memory: the case key")
    parser.add_argument("--cases", nargs="+", help="speed: only these case keys (and the plain forward)")
    parser.add_argument("--shape", default="{}", help="JSON of common.Shape fields")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="memory: repetitions of the case")
    parser.add_argument("--quality", help="quality: JSON file of the runs to do (see quality.py)")
    parser.add_argument("--no-fused-lora", action="store_true",
                        help="run adapterkit's LoRA through its hook path (its fused autograd node disabled)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with common.fused_lora_disabled(args.no_fused_lora):
        run_mode(args)


def run_mode(args) -> None:
    shape = Shape(**json.loads(args.shape))
    if args.mode == "speed":
        result = run_speed(args.libraries, shape, args.rounds, args.warmup, set(args.cases) if args.cases else None)
    elif args.mode == "ops":
        result = run_ops(args.libraries, shape, set(args.cases) if args.cases else None)
    elif args.mode == "memory":
        result = run_memory(args.libraries[0], args.case, shape, args.steps)
    elif args.mode == "scaling":
        result = run_scaling(args.libraries, shape, args.rounds, args.warmup)
    else:
        import quality
        result = quality.run_jobs(args.libraries[0], json.loads(Path(args.quality).read_text()),
                                  progress=Path(args.out + ".partial.jsonl"))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
