"""The speed cases under `torch.compile`, against the eager plain forward and the compiled one, in one process.

Why: on the H200 every eager training step is bound by the host, not the GPU (profile_step.py: the LoRA step keeps
the device busy 13.5 of ~24 ms; each step's wall time is about 35 us per launched kernel, floor and full fine-tune
alike). Then what a library can still change is what a compiler removes: launches (inductor fuses elementwise work)
and the host's cost per launch (mode "reduce-overhead": CUDA graphs replay the whole step). adapterkit's sites trace
without graph breaks (tests/test_torch_compile.py), so its adapters compile as part of the model's graph.

    python benchmarks/compiled.py --device cuda --mode reduce-overhead --out bench-out/compiled

Every case is compiled first (its first calls' time is reported as the compile time), then all are timed in one
round-robin with the eager plain forward (timing.round_robin), so the ratios share rounds. Inference cases are
checked against the eager model's output. Writes compiled.json and compiled.md to --out, after each compile too
(a run stopped at a time limit keeps what it finished), and at the end compiled.png (ratios to the eager forward).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import common  # noqa: E402
import worker  # noqa: E402
from common import Shape  # noqa: E402
from profile_step import build_model  # noqa: E402
from timing import round_robin, summarise, synchronize  # noqa: E402

DEFAULT_CASES = ("plain_forward", "lora_train", "lora_infer", "pfeiffer_train")
EAGER_BASELINE = ("base", "plain_forward", "eager")


def make_case(key: str, model, batch, mode: str, backend: str = "inductor") -> tuple[common.Case, torch.nn.Module]:
    """The timed step of `key` on `model`, compiled with torch.compile's `mode` ("eager": not compiled) and
    `backend`, and the module it calls."""
    params = list(model.parameters()) if key == "full_ft" else common.trainable(model)
    inductor_mode = None if mode == "default" or backend != "inductor" else mode  # modes are inductor's
    run = model if mode == "eager" else torch.compile(model, backend=backend, mode=inductor_mode)
    kind = common.KINDS[key]
    if kind == "infer":
        case = common.inference_case(run, batch)
    elif params:
        case = common.train_case(run, batch, params)
    else:  # the floor: a frozen model's forward and backward, no optimizer (as common.base_case)
        case = common.Case(lambda: run(**batch).last_hidden_state.float().pow(2).mean().backward(), run.train)
    if mode != "reduce-overhead":
        return case, run

    def step():  # each step a new CUDA-graph generation: the last step's outputs are dead by then
        torch.compiler.cudagraph_mark_step_begin()
        case.step()
    return common.Case(step, case.prepare), run


def compile_case(case: common.Case, calls: int, device: str) -> float:
    """Seconds for the first `calls` calls (compilation, autotuning, graph recording)."""
    start = time.perf_counter()
    for _ in range(calls):
        if case.prepare is not None:
            case.prepare()
        case.step()
    synchronize(device)
    return time.perf_counter() - start


def max_difference(model, compiled: torch.nn.Module, batch) -> float:
    """Largest difference of the compiled module's inference output from the eager model's."""
    model.eval()
    with torch.inference_mode():
        eager = model(**batch).last_hidden_state.clone()
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(**batch).last_hidden_state.clone()
    return (out - eager).abs().max().item()


def run(libraries, cases, shape: Shape, mode: str, rounds: int, warmup: int, out: Path,
        backend: str = "inductor") -> dict:
    common.setup_process(shape)
    batch = common.make_batch(shape)
    out.mkdir(parents=True, exist_ok=True)
    result = {"meta": {"shape": f"{'tiny' if shape.tiny else 'bert-base'}, {shape.layers} layers, batch "
                                f"{shape.batch} x {shape.seq}, {shape.device}", "mode": mode, "backend": backend,
                       "rounds": rounds, "versions": worker.environment(libraries)},
              "compile_s": {}, "max_difference": {}}
    timed = {EAGER_BASELINE: make_case("plain_forward", build_model("base", "plain_forward", shape, batch), batch,
                                       "eager")[0]}
    compile_case(timed[EAGER_BASELINE], 3, shape.device)
    for key in cases:
        libs = ["base"] if key in common.BASE_KEYS else [lib for lib in libraries if key in worker.library_keys(lib)]
        for lib in libs:
            model = build_model(lib, key, shape, batch)
            name = f"{lib}/{key}"
            case, compiled = make_case(key, model, batch, mode, backend)
            result["compile_s"][name] = compile_case(case, 3, shape.device)
            if common.KINDS[key] == "infer":
                result["max_difference"][name] = max_difference(model, compiled, batch)
            timed[(lib, key, mode)] = case
            write(result, out)
    times = round_robin(timed, rounds, warmup, shape.device)
    compiled_base = ("base", "plain_forward", mode)
    by_eager = summarise(times, EAGER_BASELINE)
    by_compiled = summarise(times, compiled_base) if compiled_base in times else {}
    result["rows"] = [{"library": lib, "case": key, "mode": m, "median_ms": by_eager[(lib, key, m)]["median_s"] * 1e3,
                       "ratio_to_eager_forward": by_eager[(lib, key, m)]["ratio"],
                       "ratio_to_compiled_forward": by_compiled.get((lib, key, m), {}).get("ratio")}
                      for lib, key, m in times]
    write(result, out)
    return result


def write(result: dict, out: Path) -> None:
    (out / "compiled.json").write_text(json.dumps(result, indent=1))
    hook = " (adapterkit's fused LoRA node off)" if result["meta"].get("no_fused_lora") else ""
    lines = [f"torch.compile mode {result['meta']['mode']!r}{hook}: {result['meta']['shape']}; versions "
             f"{result['meta']['versions']}.", "",
             "| library | case | compiled | median ms | × eager forward | × compiled forward | compile s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for row in result.get("rows", []):
        name = f"{row['library']}/{row['case']}"
        per_compiled = row["ratio_to_compiled_forward"]
        lines.append(f"| {row['library']} | {row['case']} | {row['mode']} | {row['median_ms']:.2f} | "
                     f"{row['ratio_to_eager_forward']:.3f} | "
                     f"{'–' if per_compiled is None else f'{per_compiled:.3f}'} | "
                     f"{'–' if row['mode'] == 'eager' else format(result['compile_s'][name], '.1f')} |")
    if result["max_difference"]:
        lines += ["", "Inference outputs, compiled against eager (max abs difference): " + "; ".join(
            f"{k} {v:.2e}" for k, v in result["max_difference"].items())]
    (out / "compiled.md").write_text("\n".join(lines) + "\n")


def chart(result: dict, path: Path) -> None:
    """The compiled cases as ratios to the eager plain forward (the issue's baseline), per library."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["mode"] != "eager"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    libs = list(dict.fromkeys(r["library"] for r in rows))
    width = 0.8 / len(libs)
    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(cases), 4.5))
    for i, lib in enumerate(libs):
        found = {r["case"]: r["ratio_to_eager_forward"] for r in rows if r["library"] == lib}
        ax.bar([x + i * width for x in range(len(cases))], [found.get(c, 0) for c in cases], width, label=lib)
    ax.set_xticks([x + width * (len(libs) - 1) / 2 for x in range(len(cases))])
    ax.set_xticklabels([common.LABELS.get(c, c).split(" (baseline")[0].split(":")[0] for c in cases], rotation=30,
                       ha="right", fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(2.1, color="grey", lw=0.8, ls="--", label="issue 7's training target (2.1x)")
    ax.set_ylabel("time / eager plain forward")
    ax.legend()
    fig.suptitle(f"torch.compile mode {result['meta']['mode']!r}: {result['meta']['shape']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_shape_arguments(p)
    p.add_argument("--mode", default="reduce-overhead", choices=("default", "reduce-overhead", "max-autotune",
                                                                 "max-autotune-no-cudagraphs"),
                   help="torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune, ...")
    p.add_argument("--libraries", nargs="+", choices=("adapterkit", "peft"), default=["adapterkit", "peft"])
    p.add_argument("--cases", nargs="+", choices=[k for k, _, kind in common.CASES if kind in ("train", "infer")]
                   + ["floor"], default=list(DEFAULT_CASES))
    p.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: no code generation; "
                   "checks the script quickly)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-fused-lora", action="store_true",
                   help="adapterkit's LoRA on its hook path for the whole run (as run_all.py --no-fused-lora)")
    p.add_argument("--out", type=Path, default=Path("bench-out/compiled"))
    args = p.parse_args(argv)
    shape = common.shape_from_arguments(args)
    with common.fused_lora_disabled(args.no_fused_lora):
        result = run(args.libraries, args.cases, shape, args.mode, args.rounds, args.warmup, args.out, args.backend)
    result["meta"]["no_fused_lora"] = args.no_fused_lora
    write(result, args.out)
    chart(result, args.out / "compiled.png")
    print((args.out / "compiled.md").read_text())
    return result


if __name__ == "__main__":
    main()
