"""Peak memory and step time of LoRA r=16 on every linear of a Llama-shaped model (issue 18, "Memory"):
fp32, bf16 (float32 adapters), bitsandbytes 8-bit and nf4 bases, adapterkit and peft, with and without gradient
checkpointing, each configuration in a fresh process (memory_worker.py).

The random float model is saved once to a temp dir; every worker loads it with `from_pretrained` (with a
`BitsAndBytesConfig` for 8-bit / nf4, on the CPU), so both libraries see identical bases, loaded as users load
them. Configurations run interleaved (adapterkit then peft for the same base and checkpointing, then the next),
`--repeats` times round-robin, so a change in the machine's load hits both libraries alike.

    python benchmarks/memory.py --layers 8 --seq 256 --out benchmarks/results/cpu-memory-llama.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIBRARIES = ("adapterkit", "peft")


def save_model(path: str, args) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                         max_position_embeddings=max(2048, args.seq), tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return {"layers": args.layers, "hidden": args.hidden, "intermediate": args.intermediate, "heads": args.heads,
            "kv_heads": args.kv_heads, "vocab": args.vocab, "batch": args.batch, "seq": args.seq,
            "params": sum(p.numel() for p in model.parameters())}


def run_one(model_dir: str, library: str, base: str, gc: bool, args) -> dict:
    cmd = [sys.executable, str(HERE / "memory_worker.py"), "--library", library, "--base", base,
           "--model-dir", model_dir, "--batch", str(args.batch), "--seq", str(args.seq),
           "--steps", str(args.steps), "--threads", str(args.threads)] + (["--gc"] if gc else []) \
        + (["--anon-weights"] if args.anon_weights else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    load = open("/proc/loadavg").read().split()[:3]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"library": library, "base": base, "gc": gc, "error": proc.stderr[-3000:]}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["loadavg_before"] = load
    return row


def summarise(runs: list) -> list:
    """One row per (base, gc, library): the median over repeats of the peak and the median step time."""
    groups: dict = {}
    for r in runs:
        if "error" not in r:
            groups.setdefault((r["base"], r["gc"], r["library"]), []).append(r)
    rows = []
    for (base, gc, lib), rs in groups.items():
        rows.append({"base": base, "gc": gc, "library": lib, "repeats": len(rs),
                     "peak_train_mb": statistics.median(r["peak_train_mb"] for r in rs),
                     "peak_process_mb": statistics.median(r["peak_process_mb"] for r in rs),
                     "rss_setup_mb": statistics.median(r["rss_setup_mb"] for r in rs),
                     "peak_over_setup_mb": statistics.median(r["peak_over_setup_mb"] for r in rs),
                     "median_step_s": statistics.median(r["median_step_s"] for r in rs),
                     "trainable_params": rs[0]["trainable_params"]})
    return rows


def table(rows: list) -> str:
    """Markdown: a row per (base, gc), adapterkit against peft, and the nf4 / fp32 peak ratios."""
    by = {(r["base"], r["gc"], r["library"]): r for r in rows}
    lines = ["| base | grad. ckpt | adapterkit peak MiB | peft peak MiB | ratio | adapterkit step s | peft step s "
             "| ratio |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for base in ("fp32", "bf16", "int8", "nf4"):
        for gc in (False, True):
            a, p = by.get((base, gc, "adapterkit")), by.get((base, gc, "peft"))
            if not a or not p:
                continue
            lines.append(f"| {base} | {'yes' if gc else 'no'} | {a['peak_train_mb']:.0f} | {p['peak_train_mb']:.0f} "
                         f"| {a['peak_train_mb'] / p['peak_train_mb']:.3f} | {a['median_step_s']:.2f} "
                         f"| {p['median_step_s']:.2f} | {a['median_step_s'] / p['median_step_s']:.2f} |")
    for gc in (False, True):
        for lib in LIBRARIES:
            n, f = by.get(("nf4", gc, lib)), by.get(("fp32", gc, lib))
            if n and f:
                lines.append(f"\nnf4 / fp32 peak, {lib}, checkpointing {'on' if gc else 'off'}: "
                             f"{n['peak_train_mb'] / f['peak_train_mb']:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="per process; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=1, help="processes per configuration, round-robin")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bases", nargs="+", default=["fp32", "bf16", "int8", "nf4"])
    parser.add_argument("--gc", nargs="+", default=["off", "on"], choices=("off", "on"))
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES))
    parser.add_argument("--anon-weights", action="store_true",
                        help="workers copy mmap-backed weights into process memory (steadier RSS; not the default "
                             "of the committed results)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="print the table of earlier results (their runs together) and write them to --out")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        runs = [run for part in parts for run in part["runs"]]
        merged = {**parts[0], "parts": [{k: v for k, v in part.items() if k not in ("rows", "runs")}
                                        for part in parts], "rows": summarise(runs), "runs": runs}
        print(table(merged["rows"]))
        if args.out:
            Path(args.out).write_text(json.dumps(merged, indent=1))
        return

    runs = []
    with tempfile.TemporaryDirectory() as model_dir:
        shape = save_model(model_dir, args)
        print(json.dumps(shape), flush=True)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        for _ in range(args.repeats):
            for base in args.bases:
                for gc in (g == "on" for g in args.gc):
                    for lib in args.libraries:
                        row = run_one(model_dir, lib, base, gc, args)
                        runs.append(row)
                        brief = row.get("error", "").strip().splitlines()[-1:] or \
                            [f"peak {row['peak_train_mb']:.0f} MiB, step {row['median_step_s']:.2f} s"]
                        print(f"{base} gc={gc} {lib}: {brief[0]}", flush=True)
                        result = {"started": started, "machine": os.uname().nodename, "cpus": os.cpu_count(),
                                  "shape": shape, "steps": args.steps, "repeats": args.repeats,
                                  "threads": args.threads, "rows": summarise(runs), "runs": runs}
                        if args.out:  # after every run: an interrupted sweep keeps what it measured
                            Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(result["rows"]))


if __name__ == "__main__":
    main()
