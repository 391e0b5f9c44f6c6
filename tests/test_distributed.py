"""Multi-process training: `torchrun` and `accelerate launch` (gloo, CPU) give identical adapter weights on every
rank, equal to one process over the same global batches. The subprocess runs are slow (two fresh interpreters);
the fast check covers the same loss-scaling path in-process with gradient accumulation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
import train_steps  # noqa: E402

SCRIPT = Path(__file__).parent / "scripts" / "train_steps.py"
BIN = Path(sys.executable).parent


def assert_close_all(a: dict, b: dict, atol: float) -> None:
    assert set(a) == set(b) and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    # Two micro-batches of 2 accumulate to the same SGD steps as batches of 4: the head's per-batch mean loss is
    # scaled by the Trainer (accepts_loss_kwargs=False), as it must be for the multi-process runs below too.
    assert_close_all(train_steps.run(tmp_path / "a", accumulation=2), train_steps.run(tmp_path / "b"), atol=1e-6)


def launch(command: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command + [str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(tmp_path, launcher):
    command = ([str(BIN / "torchrun"), "--nproc_per_node=2"] if launcher == "torchrun" else
               [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"])  # no GPU here: gloo on CPU
    launch(command, tmp_path)
    single = train_steps.run(tmp_path / "single")
    rank0 = load_file(tmp_path / "rank0_of_2.safetensors")
    rank1 = load_file(tmp_path / "rank1_of_2.safetensors")
    assert_close_all(rank0, rank1, atol=0)
    assert_close_all(rank0, single, atol=1e-5)
