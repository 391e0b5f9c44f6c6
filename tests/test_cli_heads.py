"""`adapterkit train --task token-classification | multiple-choice`: the tagging and multiple-choice heads through
the command. Metrics: word-level accuracy and scikit-learn macro F1 over tags (no seqeval entity F1: not available
offline), and multiple-choice accuracy; both equal scikit-learn on predictions computed here by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from adapterkit.cli import main
from cli_helpers import report, tiny_checkpoint, trained_model

WORDS = ["Alice", "met", "Bob", "in", "Paris", "on", "Monday", "with", "Carol", "from", "Rome"]
TAGS = {"Alice": "B-PER", "Bob": "B-PER", "Carol": "B-PER", "Paris": "B-LOC", "Rome": "B-LOC"}


def _sentences(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(3, 8)))]
        out.append((words, [TAGS.get(w, "O") for w in words]))
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def _write_tagging(tmp_path, fmt):
    train, dev = _sentences(16, 0), _sentences(10, 1)
    for name, data in (("train", train), ("dev", dev)):
        if fmt == "jsonl":
            (tmp_path / f"{name}.jsonl").write_text(
                "".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in data))
        else:  # CoNLL-ish: word, a POS column, tag; blank lines between sentences; a -DOCSTART- line
            body = "\n\n".join("\n".join(f"{w} X {t}" for w, t in zip(words, tags)) for words, tags in data)
            (tmp_path / f"{name}.conll").write_text("-DOCSTART- -X- O\n\n" + body + "\n")
    return dev


def _tagging_by_hand(ckpt, run, dev):
    """Word-level predictions: the argmax on each word's first sub-word."""
    model, tokenizer = trained_model(ckpt, run)
    names = json.loads((run / "adapter" / "head_config.json").read_text())["config"]["label2id"]
    preds, labels = [], []
    for words, tags in dev:
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0]
        seen = set()
        for pos, w in enumerate(enc.word_ids(0)):
            if w is not None and w not in seen:
                seen.add(w)
                preds.append(int(logits[pos].argmax()))
                labels.append(names[tags[w]])
    return np.array(preds), np.array(labels)


@pytest.mark.parametrize("fmt", ["jsonl", "conll"])
def test_token_classification_trains_and_scores_as_sklearn(ckpt, tmp_path, capsys, fmt):
    dev = _write_tagging(tmp_path, fmt)
    run = tmp_path / "run"
    assert main(["train", "--model", str(ckpt), "--task", "token-classification", "--train-file",
                 str(tmp_path / f"train.{fmt}"), "--dev-file", str(tmp_path / f"dev.{fmt}"), "--max-steps", "2",
                 "--batch-size", "4", "--no-plot", "--output-dir", str(run)]) == 0
    got = report(run)
    assert got["steps"] == 2 and got["kind"] == "tagging" and got["main_metric"] == "token_accuracy"
    head = json.loads((run / "adapter" / "head_config.json").read_text())["config"]
    assert head["head_type"] == "tagging" and set(head["label2id"]) == {"B-LOC", "B-PER", "O"}
    preds, labels = _tagging_by_hand(ckpt, run, dev)
    assert got["metrics"]["token_accuracy"] == pytest.approx(accuracy_score(labels, preds), abs=1e-9)
    assert got["metrics"]["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0),
                                                       abs=1e-9)
    capsys.readouterr()
    assert main(["eval", "--adapter-dir", str(run / "adapter"), "--model", str(ckpt), "--task", "ner",
                 "--dev-file", str(tmp_path / f"dev.{fmt}")]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated == pytest.approx({k: got["metrics"][k] for k in ("token_accuracy", "macro_f1")}, abs=1e-9)


def test_tagging_metrics_on_known_predictions():
    from adapterkit.cli.metrics import tagging_metrics
    labels = np.array([[0, 1, -100, 2], [1, 1, 0, -100]])
    preds = np.array([[0, 2, 1, 2], [1, 0, 0, 2]])
    kept_l, kept_p = np.array([0, 1, 2, 1, 1, 0]), np.array([0, 2, 2, 1, 0, 0])
    assert tagging_metrics(preds, labels) == pytest.approx(
        {"token_accuracy": accuracy_score(kept_l, kept_p), "macro_f1": f1_score(kept_l, kept_p, average="macro")})
    assert tagging_metrics(preds, labels)["token_accuracy"] == pytest.approx(4 / 6)


QUESTIONS = ["the sky is", "grass is", "snow is", "the sun is", "coal is", "blood is"]
ANSWERS = ["blue", "green", "white", "yellow", "black", "red"]


def _choices(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        q = i % len(QUESTIONS)
        wrong = [a for a in ANSWERS if a != ANSWERS[q]][:2]
        label = int(rng.integers(0, 3))
        options = wrong[:label] + [ANSWERS[q]] + wrong[label:]
        out.append({"question": QUESTIONS[q], "choices": options, "label": label})
    return out


def test_multiple_choice_trains_and_scores_as_sklearn(ckpt, tmp_path, capsys):
    for name, rows in (("train", _choices(12, 0)), ("dev", _choices(9, 1))):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    assert main(["train", "--model", str(ckpt), "--task", "multiple-choice", "--train-file",
                 str(tmp_path / "train.jsonl"), "--dev-file", str(tmp_path / "dev.jsonl"), "--max-steps", "2",
                 "--batch-size", "4", "--no-plot", "--output-dir", str(run)]) == 0
    got = report(run)
    assert got["steps"] == 2 and got["kind"] == "multiple_choice" and got["main_metric"] == "accuracy"
    head = json.loads((run / "adapter" / "head_config.json").read_text())["config"]
    assert head["head_type"] == "multiple_choice" and head["num_choices"] == 3
    model, tokenizer = trained_model(ckpt, run)
    preds, labels = [], []
    for row in _choices(9, 1):
        enc = tokenizer([row["question"]] * 3, row["choices"], padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{k: v.unsqueeze(0) for k, v in enc.items()}).logits
        preds.append(int(logits.argmax(-1)))
        labels.append(row["label"])
    assert got["metrics"]["accuracy"] == pytest.approx(accuracy_score(labels, preds), abs=1e-9)
    capsys.readouterr()
    assert main(["eval", "--adapter-dir", str(run / "adapter"), "--model", str(ckpt), "--task", "multiple-choice",
                 "--dev-file", str(tmp_path / "dev.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == pytest.approx(got["metrics"]["accuracy"])


BAD = {
    "tags of another length": ("token-classification", "t.jsonl", {"tokens": ["a", "b"], "tags": ["O"]},
                               ["t.jsonl", "example 1", "same length", "2 items and 1 items"]),
    "no tokens column": ("token-classification", "t.jsonl", {"words": ["a"], "tags": ["O"]},
                         ["t.jsonl", "tokens column 'tokens' not found"]),
    "choices not a list": ("multiple-choice", "m.jsonl", {"question": "q", "choices": "a", "label": 0},
                           ["m.jsonl", "list of at least 2 choices"]),
    "label out of range": ("multiple-choice", "m.jsonl", {"question": "q", "choices": ["a", "b"], "label": 2},
                           ["m.jsonl", "label 2", "0 to 1"]),
    "unknown task": ("summarisation", "t.jsonl", {"text": "a", "label": 0}, ["unknown task 'summarisation'",
                                                                            "token-classification"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_task_data_one_line_exit_2(ckpt, tmp_path, capsys, case):
    task, name, row, fragments = BAD[case]
    (tmp_path / name).write_text(json.dumps(row) + "\n")
    capsys.readouterr()
    rc = main(["train", "--model", str(ckpt), "--task", task, "--train-file", str(tmp_path / name), "--max-steps",
               "1", "--no-plot", "--output-dir", str(tmp_path / "run")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("adapterkit: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_multiple_choice_with_uneven_choices(tmp_path):
    from adapterkit.cli.data import DataError, load_choices
    rows = [{"question": "q", "choices": ["a", "b"], "label": 0}, {"question": "q", "choices": ["a", "b", "c"],
                                                                    "label": 1}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="example 2 has 3 choices, example 1 has 2"):
        load_choices(tmp_path / "m.jsonl")
