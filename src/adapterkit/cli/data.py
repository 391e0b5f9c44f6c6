"""Data for the `adapterkit` command: files and folders read through HF `datasets` (tables.py), GLUE task folders
(glue.py), token-classification and multiple-choice files, and the built-in demo set.

Every loader returns a `Dataset`; problems raise `DataError` with a one-line message naming the file and what is
wrong (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError
from .glue import GLUE_TASKS, glue_task
from .tables import column, read_rows

KINDS = ("classification", "regression", "tagging", "multiple_choice")
__all__ = ["DataError", "Dataset", "GLUE_TASKS", "demo_data", "load_choices", "load_glue", "load_table",
           "load_tagging"]


@dataclass
class Dataset:
    """texts: strings (tagging: lists of words); text_pairs: second strings (multiple choice: the lists of
    choices); labels: class indices, floats (regression), or per-word class indices (tagging)."""
    texts: list
    labels: list
    text_pairs: list | None = None
    label_names: list[str] | None = None  # index -> name; None for regression
    info: dict = field(default_factory=dict)
    kind: str = ""

    def __post_init__(self):
        if not self.kind:
            self.kind = "regression" if self.label_names is None else "classification"

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None) -> "Dataset":
        info = dict(self.info)
        if "also" in info:  # further dev splits (MNLI mismatched) take the same cap
            info["also"] = {k: v.subset(n) for k, v in info["also"].items()}
        if n is None or n >= len(self):
            return Dataset(self.texts, self.labels, self.text_pairs, self.label_names, info, self.kind)
        pairs = self.text_pairs[:n] if self.text_pairs is not None else None
        return Dataset(self.texts[:n], self.labels[:n], pairs, self.label_names, info, self.kind)


def _rows(path, split: str, no_header: bool, limit: int | None) -> list[dict]:
    rows = read_rows(path, split=split, no_header=no_header, limit=limit)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def _columns(path, split: str, no_header: bool, limit: int | None, specs) -> tuple[list[dict], list]:
    """The rows with only the columns named by `specs` ((name or index, what) pairs; None specs skipped), and
    those columns' names: the first row resolves the names, then only those columns are kept while reading, so
    a large file with many columns (MNLI's parse trees) does not stay in memory whole."""
    columns = list(_rows(path, split, no_header, 1)[0])
    names = [column(str(spec), columns, path, what) if spec is not None else None for spec, what in specs]
    rows = read_rows(path, split=split, no_header=no_header, limit=limit,
                     columns=list(dict.fromkeys(n for n in names if n is not None)))
    return rows, names


def _empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _label_index(path, raw: list, label_names: list[str] | None) -> tuple[list[int], list[str]]:
    names = list(label_names) if label_names else sorted({str(v) for v in raw}, key=_label_key)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in raw} - set(index))
    if unknown:
        raise DataError(f"{path}: labels {unknown[:10]} are not among the known labels {names}")
    return [index[str(v)] for v in raw], names


def load_table(path: str | Path, text_column: str = "text", pair_column: str | None = None,
               label_column: str = "label", regression: bool = False, label_names: list[str] | None = None,
               no_header: bool = False, limit: int | None = None, split: str = "train") -> Dataset:
    """A table with a text column, an optional text-pair column and a label column (names or 0-based indices).

    A CSV / TSV whose columns are all given as indices (`--text-column 3 --label-column 1`) is read as headerless,
    as is any with `no_header`: a header row would otherwise swallow the first example (CoLA's files)."""
    specs = [str(c) for c in (text_column, label_column, pair_column) if c is not None]
    inferred = (not no_header and Path(str(path)).suffix.lower() in (".csv", ".tsv") and Path(str(path)).is_file()
                and all(c.isdigit() for c in specs))
    no_header = no_header or inferred
    rows, (text_column, label_column, pair_column) = _columns(
        path, split, no_header, limit, ((text_column, "text"), (label_column, "label"), (pair_column, "text pair")))
    texts, pairs, raw = [], [] if pair_column else None, []
    header_rows = 0 if no_header else 1
    for i, row in enumerate(rows, 1 + header_rows):
        if _empty(row.get(text_column)) or _empty(row.get(label_column)):
            raise DataError(f"{path}: row {i} has an empty {text_column!r} or {label_column!r}")
        texts.append(str(row[text_column]))
        if pairs is not None:
            pairs.append("" if row.get(pair_column) is None else str(row[pair_column]))
        raw.append(row[label_column])
    if regression:
        labels = [_finite(path, i, label_column, v) for i, v in enumerate(raw, 1 + header_rows)]
        return Dataset(texts, labels, pairs, None, {"path": str(path)})
    if inferred and len(raw) > 2 and str(raw[0]) not in {str(v) for v in raw[1:]}:
        raise DataError(f"{path}: row 1 looks like a header (its label {raw[0]!r} is in no other row); the columns "
                        "were given as indices, so the file is read as headerless: name the columns instead, or "
                        "pass --no-header to keep row 1 as data")
    labels, names = _label_index(path, raw, label_names)
    return Dataset(texts, labels, pairs, names, {"path": str(path)})


def load_tagging(path: str | Path, tokens_column: str = "tokens", tags_column: str = "tags",
                 label_names: list[str] | None = None, limit: int | None = None, split: str = "train") -> Dataset:
    """Token classification: rows with a list of words and a list of tags of the same length, or a CoNLL-style
    text file (.conll / .txt: one "word ... tag" line per word, a blank line between sentences)."""
    if Path(path).suffix.lower() in (".conll", ".txt"):
        sentences = _conll_sentences(path, limit)
    else:
        rows, (tokens_column, tags_column) = _columns(path, split, False, limit,
                                                      ((tokens_column, "tokens"), (tags_column, "tags")))
        sentences = [(r[tokens_column], r[tags_column]) for r in rows]
    words, tags = [], []
    for i, (w, t) in enumerate(sentences, 1):
        if not isinstance(w, list) or not isinstance(t, list) or not w or len(w) != len(t):
            raise DataError(f"{path}: example {i}: tokens and tags must be non-empty lists of the same length "
                            f"(got {_describe(w)} and {_describe(t)})")
        words.append([str(x) for x in w])
        tags.append(t)
    names = list(label_names) if label_names else sorted({str(x) for t in tags for x in t}, key=_label_key)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(x) for t in tags for x in t} - set(index))
    if unknown:
        raise DataError(f"{path}: tags {unknown[:10]} are not among the known tags {names}")
    return Dataset(words, [[index[str(x)] for x in t] for t in tags], None, names, {"path": str(path)},
                   kind="tagging")


def _describe(value) -> str:
    return f"{len(value)} items" if isinstance(value, list) else type(value).__name__


def _conll_sentences(path, limit: int | None) -> list[tuple[list, list]]:
    sentences, words, tags = [], [], []
    rows = read_rows(path)  # the `text` builder: one row per line
    for i, row in enumerate(rows, 1):
        parts = (row.get("text") or "").split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
                if limit is not None and len(sentences) >= limit:
                    return sentences
            continue
        if len(parts) < 2:
            raise DataError(f"{path}: line {i}: {row['text'].strip()!r} has no tag; CoNLL lines are "
                            "'word ... tag', with a blank line between sentences")
        words.append(parts[0])
        tags.append(parts[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise DataError(f"{path}: no data rows")
    return sentences[:limit] if limit is not None else sentences


def load_choices(path: str | Path, question_column: str = "question", choices_column: str = "choices",
                 label_column: str = "label", limit: int | None = None, split: str = "train") -> Dataset:
    """Multiple choice: a question (context), a list of choices, and the index of the right one. Every example
    has the same number of choices (the head scores them side by side)."""
    rows, (question_column, choices_column, label_column) = _columns(
        path, split, False, limit, ((question_column, "question"), (choices_column, "choices"), (label_column, "label")))
    questions, choices, labels = [], [], []
    for i, row in enumerate(rows, 1):
        options, label = row[choices_column], row[label_column]
        if not isinstance(options, list) or len(options) < 2:
            raise DataError(f"{path}: example {i}: {choices_column!r} must be a list of at least 2 choices, not "
                            f"{_describe(options)}")
        if choices and len(options) != len(choices[0]):
            raise DataError(f"{path}: example {i} has {len(options)} choices, example 1 has {len(choices[0])}; "
                            "every example needs the same number")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(options):
            raise DataError(f"{path}: example {i}: label {label!r} must be the index (0 to {len(options) - 1}) "
                            "of the right choice")
        questions.append("" if row[question_column] is None else str(row[question_column]))
        choices.append([str(c) for c in options])
        labels.append(label)
    names = [str(i) for i in range(len(choices[0]))]
    return Dataset(questions, labels, choices, names, {"path": str(path)}, kind="multiple_choice")


def _finite(path, row: int, column: str, value) -> float:
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


def load_glue(task: str, data_dir: str | Path, split: str, limit: int | None = None) -> Dataset:
    """A GLUE task's train split, or its dev split(s): further dev files (MNLI mismatched) go in info["also"]."""
    spec = glue_task(task)
    if spec is None:
        raise DataError(f"unknown GLUE task {task!r}; available: {', '.join(GLUE_TASKS)}")
    folder = Path(data_dir) / spec.dir

    def one(stem: str) -> Dataset:
        data = load_table(folder / f"{stem}.tsv", spec.text, spec.pair, spec.label, regression=spec.regression,
                          label_names=spec.labels, no_header=not spec.header, limit=limit)
        data.info["metrics"] = spec.metrics  # the task's official metric set (pipeline.metrics_for)
        return data
    if split == "train":
        return one("train")
    (first, stem), *others = spec.dev.items()
    dev = one(stem)
    if first:
        dev.info["split"] = first
        dev.info["also"] = {name: one(s) for name, s in others}
    return dev


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
