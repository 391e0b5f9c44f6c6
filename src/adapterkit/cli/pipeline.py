"""What `train` and `eval` share: data selection, tokenisation, the model with its adapter and head, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import metrics
from .data import Dataset, DataError, demo_data, load_glue, load_table
from .errors import UsageError


def add_data_arguments(p) -> None:
    g = p.add_argument_group("data (default: the built-in demo reviews)")
    g.add_argument("--task", help="GLUE task: rte, mrpc, stsb, sst2 (with --data-dir)")
    g.add_argument("--data-dir", help="folder in the GLUE layout (<TASK>/train.tsv, dev.tsv)")
    g.add_argument("--train-file", help="CSV / TSV / JSONL with a text, optional text-pair and label column")
    g.add_argument("--dev-file", help="evaluation file, same format")
    g.add_argument("--text-column", default="text")
    g.add_argument("--pair-column", default=None)
    g.add_argument("--label-column", default="label")
    g.add_argument("--regression", action="store_true", help="numeric labels (one output, MSE loss)")
    g.add_argument("--max-train-samples", type=int, default=None)
    g.add_argument("--max-eval-samples", type=int, default=None)
    g.add_argument("--max-length", type=int, default=128)


def load_splits(args, need_train: bool = True) -> tuple[Dataset | None, Dataset, str]:
    """(train, dev, main metric name)."""
    if args.task:
        if not args.data_dir:
            raise UsageError("--task needs --data-dir (a folder in the GLUE layout, e.g. ../shared/data/glue)")
        from .data import GLUE_TASKS
        spec = GLUE_TASKS.get(args.task.lower().replace("-", ""))
        if spec is None:
            raise UsageError(f"unknown task {args.task!r}; available: {', '.join(GLUE_TASKS)}")
        train = load_glue(args.task, args.data_dir, "train") if need_train else None
        dev = load_glue(args.task, args.data_dir, "dev")
        metric = spec["metric"]
    elif args.train_file or args.dev_file:
        if need_train and not args.train_file:
            raise UsageError("--dev-file needs --train-file (or use --task)")
        kw = dict(text_column=args.text_column, pair_column=args.pair_column, label_column=args.label_column,
                  regression=args.regression)
        train = load_table(args.train_file, **kw) if need_train else None
        dev_path = args.dev_file or args.train_file
        dev = load_table(dev_path, **kw, label_names=None if args.regression or train is None else train.label_names)
        metric = "spearmanr" if args.regression else "accuracy"
    else:
        train, dev = demo_data(seed=getattr(args, "seed", 0))
        metric = "accuracy"
    if train is not None:
        train = train.subset(args.max_train_samples)
    return train, dev.subset(args.max_eval_samples), metric


class Encoded(torch.utils.data.Dataset):
    """Tokenised examples for the transformers Trainer (padding happens in the collator)."""

    def __init__(self, data: Dataset, tokenizer, max_length: int):
        self.encodings = tokenizer(data.texts, data.text_pairs, truncation=True, max_length=max_length)
        self.labels = data.labels
        self.regression = data.is_regression

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = float(self.labels[i]) if self.regression else int(self.labels[i])
        return item


def compute_metrics_fn(regression: bool):
    def compute(eval_pred):
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        if regression:
            return metrics.regression_metrics(np.asarray(logits).reshape(-1), labels)
        return metrics.classification_metrics(np.asarray(logits).argmax(-1), labels)
    return compute


def check_labels(train: Dataset, dev: Dataset) -> None:
    if train is not None and train.is_regression != dev.is_regression:
        raise DataError("train and dev disagree on regression vs. classification labels")


def output_dir(path: str | None, default: str) -> Path:
    out = Path(path or default)
    out.mkdir(parents=True, exist_ok=True)
    return out
