"""Markdown tables and a PNG chart from run_all.py's results (results.json), so a run can be re-rendered later:

    python benchmarks/report.py bench-out/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CASES, KINDS, LABELS, TRAIN_KEYS  # noqa: E402

LIBRARIES = ("adapterkit", "peft", "adapters")
# The process (and so the plain forward) each library's ratios refer to.
PROCESS = {"adapterkit": "main", "peft": "main", "adapters": "adapters"}
NA = "–"


def _rows(results: dict, section: str) -> dict:
    """(library, case) -> row; rows without a library (the base cases) are given to every library of their process."""
    out = {}
    for process, result in (results.get(section) or {}).items():
        for row in result["rows"] if isinstance(result, dict) else result:
            libs = [lib for lib in LIBRARIES if PROCESS[lib] == process] if row["library"] == "base" \
                else [row["library"]]
            for lib in libs:
                out[(lib, row["case"], row.get("seq"), row.get("layers"))] = row
    return out


def _present(results: dict, section: str = "speed") -> list:
    """The libraries a section ran (its processes list their versions; base rows alone do not count)."""
    part = results.get(section) or {}
    return [lib for lib in LIBRARIES if PROCESS[lib] in part
            and (lib in part[PROCESS[lib]]["versions"])]


def speed_table(results: dict) -> str:
    rows, libs = _rows(results, "speed"), _present(results)
    head = "| case | " + " | ".join(f"{lib} ms | {lib} ×" for lib in libs) + " |"
    lines = [head, "| --- |" + " ---: | ---: |" * len(libs)]
    for key, label, _ in CASES:
        cells = []
        for lib in libs:
            row = rows.get((lib, key, None, None))
            cells += [f"{row['median_s'] * 1000:.1f}", f"{row['ratio']:.3f}"] if row else [NA, NA]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ops_table(results: dict) -> str:
    """Kernels per step (forward / backward / optimizer) and above the floor of the same process, per library."""
    rows, libs = _rows(results, "ops"), _present(results, "ops")
    lines = ["| case | " + " | ".join(f"{lib} kernels (fwd / bwd / opt) | {lib} above floor | {lib} views, "
                                     f"allocs / syncs" for lib in libs) + " |",
             "| --- |" + " ---: | ---: | ---: |" * len(libs)]
    for key, label, kind in CASES:
        if kind == "op" or not any((lib, key, None, None) in rows for lib in libs):
            continue
        cells = []
        for lib in libs:
            row, floor = rows.get((lib, key, None, None)), rows.get((lib, "floor", None, None))
            if not row:
                cells += [NA, NA, NA]
                continue
            cells.append(f"{row['kernels']} ({row['forward_kernels']} / {row['backward_kernels']} / "
                         f"{row['optimizer_kernels']})")
            cells.append(f"{row['kernels'] - floor['kernels']:+d}" if floor and kind == "train" else NA)
            cells.append(f"{row['views_allocations']} / {row['host_syncs']}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(results: dict) -> str:
    rows = _rows(results, "memory")
    libs = [lib for lib in LIBRARIES if any(k[0] == lib for k in rows)]
    device = any(r.get("peak_device_mb") for r in rows.values())
    lines = ["| case | " + " | ".join(f"{lib} peak RSS MiB" for lib in libs)
             + (" | " + " | ".join(f"{lib} peak CUDA MiB" for lib in libs) if device else "") + " |",
             "| --- |" + " ---: |" * (len(libs) * (2 if device else 1))]
    base = {lib: rows.get((lib, "plain_forward", None, None)) for lib in libs}
    for key in ("plain_forward", *TRAIN_KEYS):
        cells = [rows.get((lib, key, None, None)) for lib in libs]
        text = [NA if not c else f"{c['peak_rss_mb']:.0f}" if key == "plain_forward" or not base[lib]
                else f"{c['peak_rss_mb']:.0f} (+{c['peak_rss_mb'] - base[lib]['peak_rss_mb']:.0f})"
                for lib, c in zip(libs, cells)]
        if device:
            text += [f"{c['peak_device_mb']:.0f}" if c and c.get("peak_device_mb") else NA for c in cells]
        lines.append(f"| {LABELS[key]} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def scaling_table(results: dict) -> str:
    rows = _rows(results, "scaling")
    libs = [lib for lib in LIBRARIES if any(k[0] == lib for k in rows)]
    points = sorted({(k[2], k[3]) for k in rows}, key=lambda p: (p[1], p[0]))
    lines = ["| seq | layers | " + " | ".join(f"{lib} LoRA train ×" for lib in libs)
             + " | " + " | ".join(f"plain forward ms ({lib})" for lib in libs) + " |",
             "| ---: | ---: |" + " ---: |" * (2 * len(libs))]
    for seq, layers in points:
        cells = [rows.get((lib, "lora_train", seq, layers)) for lib in libs]
        lines.append(f"| {seq} | {layers} | " + " | ".join(f"{c['ratio']:.3f}" if c else NA for c in cells) + " | "
                     + " | ".join(f"{c['plain_forward_s'] * 1000:.1f}" if c else NA for c in cells) + " |")
    return "\n".join(lines)


# issue 7's targets for adapterkit: (case, ratio at most)
TARGETS = (("lora_train", 2.1), ("lora_infer", 1.03), ("lora_merged", 1.00), ("pfeiffer_train", 2.1))


def targets_table(results: dict) -> str:
    """adapterkit against the issue's targets (ratios; peak RSS of LoRA training against the lower peer)."""
    speed, memory = _rows(results, "speed"), _rows(results, "memory")
    lines = ["| target | adapterkit | met |", "| --- | ---: | --- |"]
    for key, limit in TARGETS:
        row = speed.get(("adapterkit", key, None, None))
        if row:
            lines.append(f"| {LABELS[key]} ≤ {limit:.2f}× | {row['ratio']:.3f}× | "
                         f"{'yes' if round(row['ratio'], 2) <= limit else 'no'} |")
    ours = memory.get(("adapterkit", "lora_train", None, None))
    peers = [memory[(lib, "lora_train", None, None)]["peak_rss_mb"] for lib in ("peft", "adapters")
             if (lib, "lora_train", None, None) in memory]
    if ours and peers:
        lines.append(f"| peak RSS of LoRA training ≤ the lower peer ({min(peers):.0f} MiB) | "
                     f"{ours['peak_rss_mb']:.0f} MiB | {'yes' if ours['peak_rss_mb'] <= min(peers) else 'no'} |")

    def above_plain(lib):  # the training's own memory, without the venv's import footprint
        row, base = memory.get((lib, "lora_train", None, None)), memory.get((lib, "plain_forward", None, None))
        return row["peak_rss_mb"] - base["peak_rss_mb"] if row and base else None
    deltas = [d for d in (above_plain("peft"), above_plain("adapters")) if d is not None]
    ours_delta = above_plain("adapterkit")
    if ours_delta is not None and deltas:
        lines.append(f"| the same, above each venv's plain-forward peak (lower peer +{min(deltas):.0f} MiB) | "
                     f"+{ours_delta:.0f} MiB | {'yes' if ours_delta <= min(deltas) else 'no'} |")
    return "\n".join(lines)


def quality_table(results: dict) -> str:
    """Mean dev score per (task, method) and library over the seeds both libraries finished, the largest per-seed
    difference (with shared initial adapters the same run in both libraries, seed by seed) and the final loss."""
    runs = (results.get("quality") or {}).get("results", [])
    groups: dict = {}
    for r in sorted(runs, key=lambda r: (r["task"], r["method"], r["seed"])):
        groups.setdefault((r["task"], r["method"], r["metric"]), {}).setdefault(r["library"], []).append(r)
    lines = ["| task | method | dev metric | adapterkit | adapters | difference (points) | largest per-seed "
             "difference | final loss (adapterkit / adapters) | train steps | seeds | train s (adapterkit / adapters) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (task, method, metric), by_lib in groups.items():
        pairs = _seed_pairs(by_lib)
        if pairs:  # compare like with like: only the seeds both libraries finished
            by_lib = {"adapterkit": [x for x, _ in pairs], "adapters": [y for _, y in pairs]}
        mean = {lib: 100 * sum(r["main"] for r in rs) / len(rs) for lib, rs in by_lib.items()}
        a, b = mean.get("adapterkit"), mean.get("adapters")
        diff = f"{a - b:+.2f}" if a is not None and b is not None else NA
        per_seed = _fmt(max(abs(x["main"] - y["main"]) * 100 for x, y in pairs)) if pairs else NA
        loss = " / ".join(_fmt(sum(r["final_loss"] for r in by_lib[lib]) / len(by_lib[lib]), 4) if lib in by_lib
                          else NA for lib in ("adapterkit", "adapters"))
        any_run = next(iter(by_lib.values()))[0]
        seconds = " / ".join(_fmt(sum(r["train_s"] for r in by_lib[lib]) / len(by_lib[lib]), 1) if lib in by_lib
                             else NA for lib in ("adapterkit", "adapters"))
        seeds = min(len(rs) for rs in by_lib.values())
        lines.append(f"| {task} | {method} | {metric} | {_fmt(a)} | {_fmt(b)} | {diff} | {per_seed} | {loss} | "
                     f"{any_run['steps']} | {seeds} | {seconds} |")
    return "\n".join(lines)


def _seed_pairs(by_lib: dict) -> list:
    ours = {r["seed"]: r for r in by_lib.get("adapterkit", [])}
    return [(ours[r["seed"]], r) for r in by_lib.get("adapters", []) if r["seed"] in ours]


def _fmt(value, digits: int = 2) -> str:
    return NA if value is None else f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    meta = results["meta"]
    parts = [f"Date: {meta['date']}. Machine: {meta['machine']}. Device: {meta['device']}.",
             f"Command: `{meta['command']}`"]
    timed = any(results.get(part) for part in ("speed", "ops", "memory", "scaling"))
    parts.append((f"Shape: {meta['shape']}. " if timed else "") + f"Versions: {meta['versions']}.")
    if results.get("speed"):
        parts += ["### Speed (median ms; × = median over rounds of the ratio to the plain forward of the same "
                  "process and round)", "adapterkit and peft run in one process (transformers 5.x) and share its "
                  "base rows; `adapters` runs in its own process (transformers 4.57) with its own plain forward.",
                  speed_table(results)]
    if results.get("speed") or results.get("memory"):
        parts += ["### adapterkit against the targets of issue 7", targets_table(results)]
    if results.get("ops"):
        parts += ["### Operations per step (aten operations of one step, counted on this machine; kernels: those "
                  "that compute, each at least one launch on a GPU; AdamW with foreach, as on CUDA; see opcount.py)",
                  ops_table(results)]
    if results.get("memory"):
        parts += ["### Peak memory (a fresh process per case: import, build, then the case "
                  f"{meta.get('memory_steps', '?')} times; in brackets: above the plain forward's peak in the "
                  "same venv)", memory_table(results)]
    if results.get("scaling"):
        parts += ["### Scaling: LoRA r=8 train step / plain forward", scaling_table(results)]
    if results.get("quality"):
        q = results["quality"]
        parts += [f"### Quality parity (MiniLM, GLUE dev; budget {q['budget']}; learning rates "
                  f"{q.get('learning_rates')}; mean over seeds, ×100)",
                  quality_table(results)]
    return "\n\n".join(parts) + "\n"


def chart(results: dict, path: Path) -> None:
    """Ratios per case and library, and the scaling sweeps, in one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, libs = _rows(results, "speed"), _present(results)
    scaling = _rows(results, "scaling")
    # only the cases this run timed, and the scaling panels only when it swept
    keys = [key for key, _, _ in CASES if KINDS[key] != "op" and any((lib, key, None, None) in rows for lib in libs)]
    if scaling:
        fig, axes = plt.subplots(1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [3, 1, 1]})
    else:
        fig, ax = plt.subplots(1, 1, figsize=(2 + 0.8 * len(keys), 5.5))
        axes = [ax]
    width = 0.8 / max(1, len(libs))
    for i, lib in enumerate(libs):
        found = [rows.get((lib, k, None, None)) for k in keys]
        values = [r["ratio"] if r else 0 for r in found]
        # whiskers: the lowest and highest per-round ratio (results from before they were recorded have none)
        spread = [[r["ratio"] - r.get("ratio_min", r["ratio"]) if r else 0 for r in found],
                  [r.get("ratio_max", r["ratio"]) - r["ratio"] if r else 0 for r in found]]
        axes[0].bar([x + i * width for x in range(len(keys))], values, width, label=lib, yerr=spread, capsize=2)
    axes[0].set_xticks([x + width * (len(libs) - 1) / 2 for x in range(len(keys))])
    short = [LABELS[k].split(" (baseline")[0].split(":")[0] for k in keys]
    axes[0].set_xticklabels(short, rotation=40, ha="right", fontsize=8)
    axes[0].set_ylabel("time / plain forward (same process)")
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].legend()
    for ax, (axis, fixed_name) in zip(axes[1:], (("seq", "layers"), ("layers", "seq"))):
        for lib in LIBRARIES:
            pts = sorted((k[2] if axis == "seq" else k[3], r["ratio"]) for k, r in scaling.items()
                         if k[0] == lib and (k[3] if axis == "seq" else k[2]) == _fixed(results, fixed_name))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lib)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("sequence length" if axis == "seq" else "layers")
        ax.set_title(f"LoRA train / forward ({fixed_name} {_fixed(results, fixed_name)})", fontsize=9)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"{results['meta']['shape']} — {results['meta']['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fixed(results: dict, name: str) -> int:
    return results["meta"]["shape_fields"][name]


def write(results: dict, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    (out_dir / "report.md").write_text(markdown(results))
    if results.get("speed"):
        chart(results, out_dir / "chart.png")
    return out_dir / "report.md"


if __name__ == "__main__":
    source = Path(sys.argv[1])
    print(write(json.loads(source.read_text()), source.parent).read_text())
