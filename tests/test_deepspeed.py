"""DeepSpeed ZeRO-2 / ZeRO-3 with the AdapterTrainer on 2 CPU ranks (gloo; tests/scripts/deepspeed_steps.py): the
saved adapter + head weights equal one process over the same batches (fsdp_steps.py's plain loop), and the
checkpoints hold no base weight. Slow and not in CI: deepspeed is not a dependency (it needs a C++ toolchain to
build its CPU communication op); the test skips where it is not installed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
import deepspeed_steps  # noqa: E402
import fsdp_steps  # noqa: E402

pytestmark = pytest.mark.slow


def test_zero2_and_zero3_match_one_process(tmp_path):
    pytest.importorskip("deepspeed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                             "127.0.0.1", "--master_port", str(port), str(Path(deepspeed_steps.__file__)),
                             str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for stage, arch, method in deepspeed_steps.CASES:
        single, trained = fsdp_steps.run(arch, method)
        run = tmp_path / f"zero{stage}_{arch}_{method}"
        for saved in (run / "saved", run / "checkpoint-3"):
            weights = load_file(saved / "adapterkit_checkpoint.safetensors")
            assert set(weights) == set(single)
            diff = max((weights[k] - single[k]).abs().max().item() for k in weights)
            assert diff <= 1e-6, f"zero{stage} {arch} {method} {saved.name}: {diff}"
        # the engine's checkpoint (optimizer state, for resuming) carries the trainable parameters only
        for states in (run / "checkpoint-3").glob("global_step3/*model_states.pt"):
            module = torch.load(states, weights_only=False)["module"] or {}
            assert set(module) <= set(single), sorted(set(module) - set(single))[:5]
        assert not (run / "saved" / "global_step3").exists()
        print(f"zero{stage} {arch} {method}: saved vs 1 process {diff:.1e}")
