"""A process killed (SIGKILL) while it saves leaves the earlier save loadable (slow: real processes).

The child saves in a loop, each save with different weights (every value = the save's number). It reports each
staged file and then pauses briefly (a slow disk), so the parent can kill it at a chosen point of a save: after
the weights are staged, after the config is staged (just before the commit), or at a random moment.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import adapterkit
from transformers import BertConfig, BertModel

SRC = Path(__file__).resolve().parent.parent / "src"
GEOMETRY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=99)
CONFIG = "lora[r=16,attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True]"
CHILD = f"""
import sys, time, torch, adapterkit
import adapterkit.io.files as files
from transformers import BertConfig, BertModel
model = adapterkit.init(BertModel(BertConfig(**{GEOMETRY!r})))
model.add_adapter("a", config={CONFIG!r})
real_write = files.StagedWrite.write_bytes
def slow_write(self, filename, data):
    path = real_write(self, filename, data)
    print(f"staged {{filename}} {{i}}", flush=True)
    time.sleep(0.2)
    return path
files.StagedWrite.write_bytes = slow_write
i = 0
while True:
    i += 1
    with torch.no_grad():
        for p in model.adapterkit["a"].parameters():
            p.fill_(float(i))
    model.save_adapter(sys.argv[1], "a")
    print(f"saved {{i}}", flush=True)
"""


def _kill_at(directory: Path, trigger) -> list[str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)], stdout=subprocess.PIPE, env=env,
                             text=True)
    seen = []
    try:
        for line in child.stdout:
            seen.append(line.strip())
            if trigger(seen):
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    return seen


def _loaded_value(directory: Path) -> float:
    model = adapterkit.init(BertModel(BertConfig(**GEOMETRY)))
    model.load_adapter(directory)
    values = {float(v) for p in model.adapterkit["a"].parameters() for v in p.detach().unique()}
    assert len(values) == 1  # every tensor from one and the same save
    return values.pop()


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("staged", ["adapter.safetensors", "adapter_config.json"])
def test_kill_in_the_middle_of_a_save(staged, tmp_path):
    seen = _kill_at(tmp_path, lambda lines: lines[-1] == f"staged {staged} 2")
    assert "saved 1" in seen and "saved 2" not in seen
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers  # the kill did land inside the save: its temp files are still there
    assert _loaded_value(tmp_path) == 1.0  # the earlier save, intact


@pytest.mark.slow
@pytest.mark.ci
def test_kill_at_a_random_moment(tmp_path):
    start = []

    def trigger(lines):
        if lines[-1] == "saved 1":
            start.append(time.monotonic())
        return bool(start) and time.monotonic() - start[0] > random.Random(0).uniform(0.1, 1.5)

    seen = _kill_at(tmp_path, trigger)
    complete = max(int(line.split()[1]) for line in seen if line.startswith("saved"))
    assert _loaded_value(tmp_path) in (complete, complete + 1)  # the last complete save (or the one committing)
