"""Round-robin timing and peak memory. Library-agnostic (runs in both venvs).

Every case is timed in the same process, one repetition of each case per round, so drift of the machine (other
work, thermal state) hits all cases alike; each case's ratio is the median over rounds of (its time / that round's
baseline time), which is robust to a busy machine in a way a ratio of medians is not.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Hashable, Mapping

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def round_robin(cases: Mapping[Hashable, "object"], rounds: int, warmup: int, device: str = "cpu",
                alternate: bool = False) -> dict:
    """Time `case.step()` for every case, `warmup` untimed rounds then `rounds` timed ones; seconds per call.
    `alternate`: every other round runs the cases in reverse order (no case always follows the same one)."""
    times: dict = {name: [] for name in cases}
    for round_ in range(warmup + rounds):
        order = list(cases.items())
        for name, case in (order[::-1] if alternate and round_ % 2 else order):
            if case.prepare is not None:
                case.prepare()
            synchronize(device)
            start = time.perf_counter()
            case.step()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def summarise(times: Mapping[Hashable, list], baseline: Hashable) -> dict:
    """name -> {median_s, ratio (median of per-round ratios to `baseline`), min_s, max_s, ratio_min, ratio_max, n}."""
    base = times[baseline]
    out = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, base)]
        out[name] = {"median_s": statistics.median(t), "ratio": statistics.median(ratios), "min_s": min(t),
                     "max_s": max(t), "ratio_min": min(ratios), "ratio_max": max(ratios), "n": len(t)}
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB). It never goes down: measure in a fresh process.

    On Linux this is VmHWM of /proc/self/status, the peak of this program's own address space:
    `getrusage().ru_maxrss` survives fork+exec, so a subprocess would report its parent's peak if larger.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)  # macOS reports bytes, others KiB


def peak_device_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None
