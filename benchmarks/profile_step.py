"""Where one step spends its time: host time per phase, device busy time, kernel launches, top operations.

Why: on the H200 adapterkit's LoRA train step (3.36x), Pfeiffer train step (2.97x) and unmerged LoRA inference
(1.11x) missed issue 7's targets by more than their operation counts explain (BENCHMARKS.md, "Operations per
step"). Whether the time over the floor is the host's (Python, autograd, launches) or the device's (small,
badly-shaped kernels) decides the fix, and only a profile on the GPU tells. This is that profile, sized for a
short lent device session (about a minute at bert-base for the default cases). Its answer (fifth session,
BENCHMARKS.md "On a GPU: profile and torch.compile"): the training steps are the host's, unmerged inference the
device's.

    python benchmarks/profile_step.py --device cuda --out $OUT/profile

For each library and case: the wall time per step (timed without the profiler, synchronized), the host time of
each phase of the step (forward, backward, optimizer, zero_grad: `record_function` ranges), on CUDA the device's
busy time per step (kernel time; busy/wall near 1 means device-bound, far below 1 host-bound) and the kernel
launches per step, the operations with the most self host time and the kernels with the most device time. Writes
profile.json and profile.md to --out, and with --traces a Chrome trace per case (chrome://tracing, Perfetto).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

import common  # noqa: E402
import worker  # noqa: E402
from common import Shape  # noqa: E402
from timing import synchronize  # noqa: E402

DEFAULT_CASES = ("plain_forward", "floor", "lora_train", "lora_infer", "pfeiffer_train")
PHASES = ("forward", "backward", "optimizer", "zero_grad")
LAUNCHES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"}
HOOK_SUFFIX = "_hook"  # a LoRA case with adapterkit's fused LoRA node disabled (its hook path), for an A/B in one run


def build_model(library: str, key: str, shape: Shape, batch):
    """The model of `key` for `library` ("base" for plain_forward / floor), set up as in the timed harness."""
    if library == "base":
        model = common.make_model(shape)
        if key == "floor":
            model.requires_grad_(False)
            model.embeddings.register_forward_hook(lambda module, args, out: out.requires_grad_(True))
        return model
    builder = worker.library_cases(library, shape, batch)
    method = key.partition("_")[0]
    return builder._model(method)


def make_step(key: str, model, batch):
    """A callable running one step of `key`, its phases inside named `record_function` ranges."""
    kind = common.KINDS[key]
    if kind == "infer":
        model.eval()

        def infer():
            with torch.inference_mode(), record_function("forward"):
                model(**batch)
        return infer
    model.train()
    optimizer = None
    if kind == "train":
        params = list(model.parameters()) if key == "full_ft" else common.trainable(model)
        optimizer = torch.optim.AdamW(params, lr=1e-4)

    def train():
        with record_function("forward"):
            loss = model(**batch).last_hidden_state.float().pow(2).mean()
        with record_function("backward"):
            loss.backward()
        if optimizer is not None:
            with record_function("optimizer"):
                optimizer.step()
            with record_function("zero_grad"):
                optimizer.zero_grad(set_to_none=True)
    return train


def profile_case(step, device: str, steps: int, warmup: int, trace: Path | None = None) -> dict:
    for _ in range(warmup):
        step()
    synchronize(device)
    walls = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        walls.append(time.perf_counter() - start)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
            synchronize(device)
    if trace is not None:  # one step: a bert-base step is tens of MB of trace already
        with profile(activities=activities) as one:
            step()
            synchronize(device)
        one.export_chrome_trace(str(trace))
    return summarise(prof, steps, statistics.median(walls), device)


def summarise(prof, steps: int, wall_s: float, device: str, top: int = 12) -> dict:
    """Per-step figures from a profile of `steps` steps (times in ms)."""
    averages = prof.key_averages()
    phases = {p: 0.0 for p in PHASES}
    for event in prof.events():
        if event.name in phases:
            phases[event.name] += event.cpu_time_total / 1000 / steps
    host_ops = sorted((a for a in averages if a.self_cpu_time_total > 0 and a.key not in phases),
                      key=lambda a: -a.self_cpu_time_total)[:top]
    out = {"wall_ms": wall_s * 1000, "host_ms": {p: round(v, 3) for p, v in phases.items() if v},
           "top_host_ops": [{"name": a.key, "calls": a.count / steps, "self_ms": a.self_cpu_time_total / 1000 / steps}
                            for a in host_ops]}
    if device.startswith("cuda"):
        # device-side events (kernels, copies, sets); the record_function ranges mirrored on the GPU timeline are
        # annotations, not work
        kernels = [a for a in averages if a.device_type == torch.autograd.DeviceType.CUDA
                   and not getattr(a, "is_user_annotation", False) and a.self_device_time_total > 0]
        busy = sum(a.self_device_time_total for a in kernels) / 1000 / steps
        out.update({
            "device_busy_ms": busy, "busy_fraction": busy / out["wall_ms"],
            "launches": sum(a.count for a in averages if a.key in LAUNCHES) / steps,
            "top_kernels": [{"name": a.key[:120], "calls": a.count / steps,
                             "device_ms": a.self_device_time_total / 1000 / steps}
                            for a in sorted(kernels, key=lambda a: -a.self_device_time_total)[:top]]})
    return out


def markdown(result: dict) -> str:
    lines = [f"Profile: {result['meta']['shape']}; {result['meta']['steps']} profiled steps after "
             f"{result['meta']['warmup']}; versions {result['meta']['versions']}.", "",
             "| library | case | wall ms | device busy ms | busy / wall | launches | host ms: " + " / ".join(PHASES)
             + " |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["rows"]:
        busy = row.get("device_busy_ms")
        lines.append(
            f"| {row['library']} | {row['case']} | {row['wall_ms']:.2f} | "
            + (f"{busy:.2f} | {row['busy_fraction']:.2f} | {row['launches']:.0f}" if busy is not None else "– | – | –")
            + " | " + " / ".join(f"{row['host_ms'].get(p, 0):.2f}" for p in PHASES) + " |")
    for row in result["rows"]:
        lines += ["", f"**{row['library']} {row['case']}**: top host operations (self ms per step, calls): "
                  + "; ".join(f"{o['name']} {o['self_ms']:.3f} ({o['calls']:.0f})" for o in row["top_host_ops"])]
        if row.get("top_kernels"):
            lines.append("top kernels (device ms per step, calls): " + "; ".join(
                f"{k['name']} {k['device_ms']:.3f} ({k['calls']:.0f})" for k in row["top_kernels"]))
    return "\n".join(lines) + "\n"


def run(libraries, cases, shape: Shape, steps: int, warmup: int, out: Path, traces: bool = False) -> dict:
    common.setup_process(shape)
    batch = common.make_batch(shape)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in cases:
        base_key = key.removesuffix(HOOK_SUFFIX)
        if key in common.BASE_KEYS:
            libs = ["base"]
        elif key != base_key:  # the hook variant is adapterkit's alone
            libs = ["adapterkit"]
        else:
            libs = [lib for lib in libraries if key in worker.library_keys(lib)]
        for lib in libs:
            with common.fused_lora_disabled(key != base_key):
                model = build_model(lib, base_key, shape, batch)
                trace = out / f"trace-{lib}-{key}.json" if traces else None
                rows.append({"library": lib, "case": key, **profile_case(
                    make_step(base_key, model, batch), shape.device, steps, warmup, trace)})
            del model
    result = {"meta": {"shape": f"{'tiny' if shape.tiny else 'bert-base'}, {shape.layers} layers, batch "
                                f"{shape.batch} x {shape.seq}, {shape.device}", "steps": steps, "warmup": warmup,
                       "versions": worker.environment(libraries)}, "rows": rows}
    (out / "profile.json").write_text(json.dumps(result, indent=1))
    (out / "profile.md").write_text(markdown(result))
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_shape_arguments(p)
    p.add_argument("--libraries", nargs="+", choices=("adapterkit", "peft"), default=["adapterkit", "peft"])
    keys = [k for k, _, kind in common.CASES if kind != "op"]
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES),
                   choices=keys + [k + HOOK_SUFFIX for k in ("lora_train", "lora_infer")],
                   help="case keys; lora_train_hook / lora_infer_hook: adapterkit with its fused LoRA node off")
    p.add_argument("--steps", type=int, default=10, help="timed steps, then as many profiled ones")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--traces", action="store_true", help="also write a Chrome trace of one step per case")
    p.add_argument("--out", type=Path, default=Path("bench-out/profile"))
    args = p.parse_args(argv)
    shape = common.shape_from_arguments(args)
    result = run(args.libraries, args.cases, shape, args.steps, args.warmup, args.out, args.traces)
    print((args.out / "profile.md").read_text())
    return result


if __name__ == "__main__":
    main()
