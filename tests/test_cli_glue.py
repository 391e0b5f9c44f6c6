"""`adapterkit train --task <GLUE task>`: every GLUE task + WNLI in its distributed folder layout, with its official
metrics. SST-2 / RTE / MRPC / STS-B train on tiny slices of ../shared/data/glue; CoLA (headerless), MNLI (two dev
files), QNLI, QQP and WNLI on files this test writes in those tasks' real layouts. Each run's reported metrics must
equal scikit-learn / scipy on predictions computed here by hand from the saved adapter."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from adapterkit.cli import main
from cli_helpers import GLUE, logits_by_hand, report, tiny_checkpoint

N_TRAIN, N_DEV = 24, 16
STEPS = "12"
METHOD = "lora[r=4]"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


def _train(ckpt, data_dir, task, out, capsys=None):
    rc = main(["train", "--model", str(ckpt), "--task", task, "--data-dir", str(data_dir), "--method", METHOD,
               "--max-steps", STEPS, "--lr", "2e-2", "--batch-size", "8", "--max-train-samples", str(N_TRAIN),
               "--max-eval-samples", str(N_DEV), "--no-plot", "--output-dir", str(out)])
    assert rc == 0
    return report(out)


def _expected(kind, logits, labels):
    """The official metrics, by scikit-learn / scipy, from the raw logits and the file's labels."""
    if kind == "correlation":
        preds = logits.reshape(-1)
        return {"pearsonr": pearsonr(preds, labels).statistic, "spearmanr": spearmanr(preds, labels).statistic}
    preds = logits.argmax(-1)
    out = {"accuracy": accuracy_score(labels, preds)}
    if kind == "matthews":
        out["matthews_correlation"] = matthews_corrcoef(labels, preds)
    if kind == "f1":
        out["f1"] = f1_score(labels, preds)
    return out


def _check(got: dict, expected: dict, prefix: str = ""):
    for name, value in expected.items():
        assert got[prefix + name] == pytest.approx(value, abs=1e-5), (prefix + name, got)


def _read_tsv(path, header=True):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return (rows[0], rows[1:]) if header else (None, rows)


# the shared GLUE data: (task, text column, pair column, label column, label -> index, metric kind, main metric)
SHARED = [
    ("sst2", "SST-2", "sentence", None, "label", {"0": 0, "1": 1}, "accuracy", "accuracy"),
    ("rte", "RTE", "sentence1", "sentence2", "label", {"entailment": 0, "not_entailment": 1}, "accuracy",
     "accuracy"),
    ("mrpc", "MRPC", "#1 String", "#2 String", "Quality", {"0": 0, "1": 1}, "f1", "f1"),
    ("stsb", "STS-B", "sentence1", "sentence2", "score", None, "correlation", "spearmanr"),
]


@pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not present (set GLUE_DIR)")
@pytest.mark.parametrize("task,folder,text,pair,label,index,kind,main_metric", SHARED, ids=[s[0] for s in SHARED])
def test_shared_glue_task_trains_with_its_official_metrics(ckpt, tmp_path, task, folder, text, pair, label, index,
                                                           kind, main_metric):
    got = _train(ckpt, GLUE, task, tmp_path)
    assert got["main_metric"] == main_metric and got["train_examples"] == N_TRAIN and got["dev_examples"] == N_DEV
    assert got["steps"] == int(STEPS)
    header, rows = _read_tsv(GLUE / folder / "dev.tsv")
    rows = rows[:N_DEV]
    col = {name: i for i, name in enumerate(header)}
    labels = [float(r[col[label]]) if index is None else index[r[col[label]]] for r in rows]
    logits = logits_by_hand(ckpt, tmp_path, [r[col[text]] for r in rows],
                            [r[col[pair]] for r in rows] if pair else None)
    _check(got["metrics"], _expected(kind, logits, np.asarray(labels)))


def _write(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


NOUNS = ["cat", "film", "book", "meal", "song", "trip", "game", "park"]


def _sentence(i, positive):
    return f"the {NOUNS[i % len(NOUNS)]} was {'great and lovely' if positive else 'awful and dull'} ."


GOOD = [_sentence(i, True) for i in range(3)]
BAD = [_sentence(i, False) for i in range(3)]


def _pairs(n, seed):
    """(text, second text, 0/1): the label shows in the first text's words, so a few steps learn some of it."""
    rng = np.random.default_rng(seed)
    return [(_sentence(i + seed, bool(y)), _sentence(i + 3, True), int(y)) for i, y in
            enumerate(rng.integers(0, 2, n))]


def _cola(d, seed):
    """Headerless: source, label, original-label mark ('*' when unacceptable, else empty), sentence."""
    rows = [("gj04", y, "" if y else "*", s) for s, _, y in _pairs(N_TRAIN if seed == 0 else N_DEV, seed)]
    return rows, [r[3] for r in rows], None, [r[1] for r in rows]


def _write_cola(d):
    rows, *_ = _cola(d, 0)
    _write(d / "CoLA" / "train.tsv", None, rows)
    rows, texts, _, labels = _cola(d, 1)
    _write(d / "CoLA" / "dev.tsv", None, rows)
    return {"": (texts, None, labels)}


MNLI_LABELS = ["contradiction", "entailment", "neutral"]
MNLI_TRAIN = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV = MNLI_TRAIN[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def _mnli_rows(n, seed, dev):
    rng = np.random.default_rng(seed)
    rows, texts, pairs, labels = [], [], [], []
    for i in range(n):
        y = int(rng.integers(0, 3))
        s1, s2 = GOOD[i % 3], (GOOD + BAD)[(i + y) % 6]
        gold = MNLI_LABELS[y]
        rows.append([i, 1000 + i, f"{i}e", "fiction", f"( {s1} )", f"( {s2} )", f"(ROOT {s1})", f"(ROOT {s2})", s1,
                     s2, gold] + ([gold] * 4 if dev else []) + [gold])
        texts.append(s1)
        pairs.append(s2)
        labels.append(y)
    return rows, texts, pairs, labels


def _write_mnli(d):
    _write(d / "MNLI" / "train.tsv", MNLI_TRAIN, _mnli_rows(N_TRAIN, 0, False)[0])
    out = {}
    for split, seed in (("matched", 1), ("mismatched", 2)):
        rows, texts, pairs, labels = _mnli_rows(N_DEV, seed, True)
        _write(d / "MNLI" / f"dev_{split}.tsv", MNLI_DEV, rows)
        out[split + "_"] = (texts, pairs, labels)
    return out


def _pair_task(folder, header, label_of, index_of=int):
    """Header row; an id column (QQP: three), the two texts, the label last."""
    ids = 3 if folder == "QQP" else 1

    def write(d):
        for split, n, seed in (("train", N_TRAIN, 0), ("dev", N_DEV, 1)):
            data = _pairs(n, seed)
            _write(d / folder / f"{split}.tsv", header, [[i] * ids + [a, b, label_of(y)] for i, (a, b, y) in
                                                          enumerate(data)])
        return {"": ([a for a, _, _ in data], [b for _, b, _ in data], [index_of(y) for _, _, y in data])}
    return write


WRITTEN = {
    # task: (writer, metric kind, main metric)
    "cola": (_write_cola, "matthews", "matthews_correlation"),
    "mnli": (_write_mnli, "accuracy", "matched_accuracy"),
    "qnli": (_pair_task("QNLI", ["index", "question", "sentence", "label"],
                        lambda y: "entailment" if y else "not_entailment", lambda y: 1 - y), "accuracy", "accuracy"),
    "qqp": (_pair_task("QQP", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], int), "f1", "f1"),
    "wnli": (_pair_task("WNLI", ["index", "sentence1", "sentence2", "label"], int), "accuracy", "accuracy"),
}


@pytest.mark.parametrize("task", list(WRITTEN))
def test_written_glue_layout_trains_with_its_official_metrics(ckpt, tmp_path, task):
    writer, kind, main_metric = WRITTEN[task]
    dev_splits = writer(tmp_path / "glue")
    got = _train(ckpt, tmp_path / "glue", task, tmp_path / "run")
    assert got["main_metric"] == main_metric and got["train_examples"] == N_TRAIN and got["dev_examples"] == N_DEV
    assert main_metric in got["metrics"]
    for prefix, (texts, pairs, labels) in dev_splits.items():
        logits = logits_by_hand(ckpt, tmp_path / "run", texts, pairs)
        _check(got["metrics"], _expected(kind, logits, np.asarray(labels)), prefix)
    if task == "mnli":
        assert {"matched_accuracy", "mismatched_accuracy"} <= set(got["metrics"])


def test_eval_reports_both_mnli_dev_sets(ckpt, tmp_path, capsys):
    _write_mnli(tmp_path / "glue")
    trained = _train(ckpt, tmp_path / "glue", "mnli", tmp_path / "run")
    capsys.readouterr()
    assert main(["eval", "--adapter-dir", str(tmp_path / "run" / "adapter"), "--model", str(ckpt), "--task", "mnli",
                 "--data-dir", str(tmp_path / "glue")]) == 0
    got = json.loads(capsys.readouterr().out)["metrics"]
    for name in ("matched_accuracy", "mismatched_accuracy"):
        assert got[name] == pytest.approx(trained["metrics"][name], abs=1e-9)


def test_cola_from_a_file_by_column_index(ckpt, tmp_path):
    """Headerless files anywhere: --no-header with integer column indices (CoLA's train.tsv as a plain file)."""
    _write_cola(tmp_path)
    assert main(["train", "--model", str(ckpt), "--train-file", str(tmp_path / "CoLA" / "train.tsv"), "--dev-file",
                 str(tmp_path / "CoLA" / "dev.tsv"), "--no-header", "--text-column", "3", "--label-column", "1",
                 "--max-steps", "2", "--batch-size", "8", "--no-plot", "--output-dir", str(tmp_path / "run")]) == 0
    got = report(tmp_path / "run")
    assert got["train_examples"] == N_TRAIN and got["dev_examples"] == N_DEV and got["steps"] == 2


def test_glue_metric_sets_on_known_predictions():
    from adapterkit.cli import metrics
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    got = metrics.glue_metrics("matthews", preds, labels)
    assert got["matthews_correlation"] == pytest.approx(matthews_corrcoef(labels, preds), abs=1e-12)
    got = metrics.glue_metrics("f1_accuracy", preds, labels)
    assert got == pytest.approx({"f1": f1_score(labels, preds), "accuracy": accuracy_score(labels, preds)}, abs=1e-12)
    a, b = rng.normal(size=40), rng.normal(size=40)
    a[3] = a[4]  # a tie
    got = metrics.glue_metrics("correlation", a, b)
    assert got == pytest.approx({"pearsonr": pearsonr(a, b).statistic, "spearmanr": spearmanr(a, b).statistic},
                                abs=1e-12)
    three = rng.integers(0, 3, 40)
    assert metrics.glue_metrics("accuracy", three, labels) == {"accuracy": accuracy_score(labels, three)}
    # a hand-checkable case: 3 of 4 right; one false positive
    assert metrics.glue_metrics("f1_accuracy", [1, 1, 0, 1], [1, 0, 0, 1]) == pytest.approx(
        {"f1": 0.8, "accuracy": 0.75})


def _layouts(tmp_path):
    """(task, data dir, {prefix: (texts, pairs, labels)}, metric kind) for every task, shared and written."""
    out = []
    for task, folder, text, pair, label, index, kind, _ in (SHARED if GLUE.is_dir() else []):
        header, rows = _read_tsv(GLUE / folder / "dev.tsv")
        col = {name: i for i, name in enumerate(header)}
        labels = [float(r[col[label]]) if index is None else index[r[col[label]]] for r in rows[:N_DEV]]
        out.append((task, GLUE, {"": ([r[col[text]] for r in rows[:N_DEV]],
                                      [r[col[pair]] for r in rows[:N_DEV]] if pair else None, labels)}, kind))
    for task, (writer, kind, _) in WRITTEN.items():
        out.append((task, tmp_path, writer(tmp_path), kind))
    return out


def test_every_task_reads_its_layout_and_scores_known_predictions_as_sklearn(tmp_path):
    """Varied (random) logits on each task's dev rows: the command's metrics equal scikit-learn / scipy on the
    labels read here with the csv module (a few training steps on a tiny model predict one class: too weak)."""
    from adapterkit.cli.data import load_glue
    from adapterkit.cli.pipeline import eval_sets, metrics_for
    rng = np.random.default_rng(1)
    layouts = _layouts(tmp_path)
    assert len(layouts) == (9 if GLUE.is_dir() else 5)
    for task, data_dir, splits, kind in layouts:
        dev = load_glue(task, data_dir, "dev", limit=N_DEV)
        sets = eval_sets(dev)
        sets = {f"{k}_": v for k, v in sets.items()} if isinstance(sets, dict) else {"": sets}
        assert set(sets) == set(splits), task
        for prefix, (texts, pairs, labels) in splits.items():
            data = sets[prefix]
            assert data.texts == texts and data.text_pairs == pairs and data.labels == labels, task
            width = 1 if kind == "correlation" else (3 if task == "mnli" else 2)
            logits = rng.normal(size=(len(labels), width))
            got = metrics_for(data, logits, np.asarray(data.labels))
            assert set(got) == set(_expected(kind, logits, np.asarray(labels))), task
            _check(got, _expected(kind, logits, np.asarray(labels)))
