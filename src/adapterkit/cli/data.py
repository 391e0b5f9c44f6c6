"""Data for the `adapterkit` command: CSV / TSV / JSONL files, GLUE task folders, the built-in demo set.

Every loader returns `Dataset(texts, text_pairs, labels, label_names)`; problems raise `DataError` with a
one-line message naming the file and what is wrong (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """Bad data input: the message names the file and the problem."""


@dataclass
class Dataset:
    texts: list[str]
    labels: list
    text_pairs: list[str] | None = None
    label_names: list[str] | None = None  # classification: index -> name; None for regression
    info: dict = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        pairs = self.text_pairs[:n] if self.text_pairs is not None else None
        return Dataset(self.texts[:n], self.labels[:n], pairs, self.label_names, self.info)


# GLUE layout (../shared/data/glue/<TASK>/{train,dev}.tsv): text column(s), label column, metric
GLUE_TASKS = {
    "sst2": {"dir": "SST-2", "text": "sentence", "pair": None, "label": "label", "metric": "accuracy"},
    "rte": {"dir": "RTE", "text": "sentence1", "pair": "sentence2", "label": "label", "metric": "accuracy"},
    "mrpc": {"dir": "MRPC", "text": "#1 String", "pair": "#2 String", "label": "Quality", "metric": "f1"},
    "stsb": {"dir": "STS-B", "text": "sentence1", "pair": "sentence2", "label": "score", "metric": "spearmanr",
             "regression": True},
}


def _parse_row(line: str, where: str):
    """One JSON line through adapterkit's JSON reader (bounded nesting); a bad line is a DataError."""
    from ..errors import CheckpointError
    from ..io.files import parse_json
    try:
        return parse_json(line, where)
    except CheckpointError as exc:
        raise DataError(str(exc).replace("; the file is corrupted or truncated", "")) from None


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            rows = []
            with path.open(encoding="utf-8-sig") as f:
                for i, line in enumerate(f, 1):
                    if line.strip():
                        row = _parse_row(line, f"{path}: line {i}")
                        if not isinstance(row, dict):
                            raise DataError(f"{path}: line {i} is not a JSON object")
                        rows.append(row)
            return rows
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8-sig", newline="") as f:
                return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",",
                                           quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as {suffix[1:].upper()} ({exc})") from None
    raise DataError(f"{path}: unsupported format {suffix or '(no extension)'}; use .csv, .tsv or .jsonl")


def load_table(path: str | Path, text_column: str = "text", pair_column: str | None = None,
               label_column: str = "label", regression: bool = False, label_names: list[str] | None = None
               ) -> Dataset:
    """A CSV/TSV/JSONL file with a text column, an optional text-pair column and a label column."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path}: no data rows")
    columns = set(rows[0])
    for col, what in ((text_column, "text"), (label_column, "label"), (pair_column, "text pair")):
        if col is not None and col not in columns:
            raise DataError(f"{path}: {what} column {col!r} not found; columns: {', '.join(sorted(columns))}")
    texts, pairs, raw = [], [] if pair_column else None, []
    for i, row in enumerate(rows, 2):
        if row.get(text_column) in (None, "") or row.get(label_column) in (None, ""):
            raise DataError(f"{path}: row {i} has an empty {text_column!r} or {label_column!r}")
        texts.append(str(row[text_column]))
        if pairs is not None:
            pairs.append(str(row.get(pair_column) or ""))
        raw.append(row[label_column])
    if regression:
        labels = [_finite(path, i, label_column, v) for i, v in enumerate(raw, 2)]
        return Dataset(texts, labels, pairs, None, {"path": str(path)})
    names = list(label_names) if label_names else sorted({str(v) for v in raw}, key=_label_key)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in raw} - set(index))
    if unknown:
        raise DataError(f"{path}: labels {unknown} are not among the known labels {names}")
    return Dataset(texts, [index[str(v)] for v in raw], pairs, names, {"path": str(path)})


def _finite(path: Path, row: int, column: str, value) -> float:
    """A regression label: a finite number (a NaN or inf label trains NaN weights)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise DataError(f"{path}: row {row}: label {value!r} in column {column!r} is not a finite number; "
                        "regression labels must be finite numbers")
    return number


def _label_key(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def load_glue(task: str, data_dir: str | Path, split: str) -> Dataset:
    spec = GLUE_TASKS.get(task.lower().replace("-", ""))
    if spec is None:
        raise DataError(f"unknown GLUE task {task!r}; available: {', '.join(GLUE_TASKS)}")
    path = Path(data_dir) / spec["dir"] / f"{split}.tsv"
    return load_table(path, spec["text"], spec["pair"], spec["label"], regression=spec.get("regression", False))


# -- the built-in demo set ------------------------------------------------------------------------------------
POSITIVE = ["great", "excellent", "wonderful", "reliable", "delightful", "superb", "pleasant", "solid", "fantastic",
            "sturdy", "impressive", "lovely"]
NEGATIVE = ["terrible", "awful", "broken", "disappointing", "flimsy", "useless", "horrible", "poor", "dreadful",
            "shoddy", "noisy", "unreliable"]
ADVERBS = ["really", "quite", "very", "truly", "rather", "simply", "so", "pretty", "fairly"]
ITEMS = ["phone", "laptop", "blender", "jacket", "camera", "kettle", "chair", "lamp", "backpack", "monitor",
         "keyboard", "tent", "bicycle", "watch", "speaker", "printer", "toaster", "sofa", "mattress", "drill",
         "headset", "router", "stroller", "oven"]
OPENERS = ["", "honestly, ", "after a month, ", "i think ", "overall, ", "to be fair, "]


def demo_data(seed: int = 0, n_train: int = 800, n_dev: int = 300) -> tuple[Dataset, Dataset]:
    """Template product reviews, labelled positive / negative by the adjective's polarity, flipped by "not".

    About 30% of reviews are negated, so a bag of words cannot solve it; train and dev use disjoint items
    (dev measures generalisation to unseen products). Chance is 50%.
    """
    rng = random.Random(seed)

    def make(items, n):
        texts, labels = [], []
        for _ in range(n):
            positive = rng.random() < 0.5
            negated = rng.random() < 0.3
            adjective = rng.choice(POSITIVE if positive else NEGATIVE)
            texts.append(f"{rng.choice(OPENERS)}the {rng.choice(items)} is {'not ' if negated else ''}"
                         f"{rng.choice(ADVERBS)} {adjective}")
            labels.append(int(positive != negated))
        return Dataset(texts, labels, None, ["negative", "positive"], {"source": "adapterkit demo reviews"})

    return make(ITEMS[:18], n_train), make(ITEMS[18:], n_dev)
