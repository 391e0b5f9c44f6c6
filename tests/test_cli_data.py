"""CLI data loading and metrics (the command itself is tested in test_cli.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from adapterkit.cli import metrics
from adapterkit.cli.data import DataError, demo_data, load_glue, load_table

# ../shared/data/glue beside the checkout; GLUE_DIR overrides (a worktree elsewhere)
GLUE = Path(os.environ.get("GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))


def test_metrics_against_definitions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    b[:10] = a[:10]
    a[5] = a[6]  # a tie
    scipy_stats = pytest.importorskip("scipy.stats")
    assert metrics.spearmanr(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    assert metrics.pearsonr(a, b) == pytest.approx(scipy_stats.pearsonr(a, b).statistic, abs=1e-12)
    preds, labels = [1, 0, 1, 1, 0], [1, 1, 1, 0, 0]
    assert metrics.accuracy(preds, labels) == pytest.approx(0.6)
    assert metrics.f1(preds, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_table_formats(tmp_path):
    (tmp_path / "d.csv").write_text('text,label\n"a, b",pos\nc,neg\n')
    (tmp_path / "d.tsv").write_text("text\tpair\tlabel\na\tx\t1\nb\ty\t0\n")
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "a", "label": 0.5}) + "\n" + json.dumps({"text": "b", "label": 2}))
    csv_ds = load_table(tmp_path / "d.csv")
    assert csv_ds.texts == ["a, b", "c"] and csv_ds.label_names == ["neg", "pos"] and csv_ds.labels == [1, 0]
    tsv_ds = load_table(tmp_path / "d.tsv", pair_column="pair")
    assert tsv_ds.text_pairs == ["x", "y"] and tsv_ds.labels == [1, 0]
    reg = load_table(tmp_path / "d.jsonl", regression=True)
    assert reg.is_regression and reg.labels == [0.5, 2.0]


@pytest.mark.parametrize("content,name,match", [
    ("text,label\n", "e.csv", "no data rows"),
    ("txt,label\na,1\n", "c.csv", "text column 'text' not found; columns: label, txt"),
    ("text,lab\na,1\n", "l.csv", "label column 'label' not found"),
    ("{bad json\n", "j.jsonl", "cannot be read as JSON Lines"),
    ("a b c", "x.parquet", "cannot be read as PARQUET"),
    ("a b c", "x.xlsx", "unsupported format .xlsx"),
])
def test_bad_data_names_file_and_problem(tmp_path, content, name, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=match) as err:
        load_table(tmp_path / name)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_table(tmp_path / "nope.csv")


@pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not present")
@pytest.mark.parametrize("task,n,regression", [("rte", 277, False), ("mrpc", 408, False), ("stsb", 1500, True),
                                               ("sst2", 872, False)])
def test_glue_dev_sets(task, n, regression):
    ds = load_glue(task, GLUE, "dev")
    assert len(ds) == n and ds.is_regression == regression
    if task == "rte":
        assert ds.label_names == ["entailment", "not_entailment"] and ds.text_pairs is not None


def test_demo_data_is_balanced_and_disjoint():
    train, dev = demo_data(seed=0)
    assert 0.4 < np.mean(train.labels) < 0.6 and len(dev) == 300
    train_items = {t.split(" is ")[0].split()[-1] for t in train.texts}
    dev_items = {t.split(" is ")[0].split()[-1] for t in dev.texts}
    assert not train_items & dev_items
