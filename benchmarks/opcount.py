"""Operations dispatched per step: a measure of per-step overhead that does not depend on the machine.

Why: on a GPU at batch 8 x 128 a step is bound by what each operation costs the host (Python, dispatch, autograd
bookkeeping, the kernel launch), not by arithmetic, so its milliseconds depend on the machine while the number of
operations does not. Counted on the CPU, that number explains GPU ratios without a GPU: a case that dispatches
twice the kernels of the floor cannot be near the floor where launches dominate.

Every aten operation that reaches the dispatcher below autograd is counted (a TorchDispatchMode; the backward runs
in the same thread on the CPU, so it is counted too), split into
- kernels: operations that compute (on a GPU each launches at least one kernel),
- views and allocations: metadata only (`view`, `t`, `expand`, `empty`, ...; no kernel),
- host syncs: `_local_scalar_dense` (`.item()` and the like; on a GPU it waits for the device) in the model's
  forward or backward (the optimizer's reads of its CPU step counters are not syncs and are left out),
and kernels by phase: forward (everything outside the backward and the optimizer), backward (inside an autograd
graph task), optimizer (between the global optimizer step hooks). AdamW runs with `foreach=True` here, as torch
chooses by default on CUDA (on the CPU it would loop over the parameters, ~10 kernels each).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

# no kernel, though not marked as views in their schema
METADATA = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "_unsafe_view",
            "_reshape_alias"}
SYNCS = {"_local_scalar_dense"}
PHASES = ("forward", "backward", "optimizer")


class OpCounter(TorchDispatchMode):
    """Counts dispatched aten operations by kind and phase while active."""

    def __init__(self):
        super().__init__()
        self.kinds: Counter = Counter()
        self.kernels: Counter = Counter()  # phase -> kernels
        self.names: Counter = Counter()  # kernel op name -> count
        self.in_optimizer = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        phase = ("optimizer" if self.in_optimizer
                 else "backward" if torch._C._current_graph_task_id() != -1 else "forward")
        if func.is_view or name in METADATA or func.namespace != "aten":  # e.g. profiler.record_function
            self.kinds["views_allocations"] += 1
        elif name in SYNCS:
            # AdamW (not capturable) reads its step counters, CPU tensors even on CUDA: not a device sync
            self.kinds["host_syncs" if phase != "optimizer" else "optimizer_reads"] += 1
        else:
            self.kinds["kernels"] += 1
            self.names[name] += 1
            self.kernels[phase] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        def pre(*_):
            self.in_optimizer = True

        def post(*_):
            self.in_optimizer = False
        self._hooks = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def result(self, top: int = 8) -> dict:
        return {"kernels": self.kinds["kernels"], "views_allocations": self.kinds["views_allocations"],
                "host_syncs": self.kinds["host_syncs"], "optimizer_reads": self.kinds["optimizer_reads"], **{f"{p}_kernels": self.kernels[p] for p in PHASES},
                "top_kernels": dict(self.names.most_common(top))}


def count_case(case, warmup: int = 1) -> dict:
    """The operations of one `case.step()` after `warmup` untimed steps (lazy state, optimizer state exist)."""
    for _ in range(warmup):
        if case.prepare is not None:
            case.prepare()
        case.step()
    if case.prepare is not None:
        case.prepare()
    with OpCounter() as counter:
        case.step()
    return counter.result()
