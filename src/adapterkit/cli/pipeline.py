"""What `train` and `eval` share: data selection, tokenisation, the model with its adapter and head, metrics."""

from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .data import Dataset, DataError, demo_data, load_glue, load_table
from .errors import UsageError


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
    if train is not None and not train.is_regression and len(train.label_names) < 2:
        where = train.info.get("path", "the training data")
        found = ", ".join(map(repr, train.label_names))
        raise DataError(f"{where}: the labels hold {len(train.label_names)} class ({found}); classification needs "
                        "at least 2 (numeric labels: add --regression)")


def check_head_fits(head_config: dict, dev: Dataset, adapter_dir) -> None:
    """The data's kind (regression / classification) must be the head's: a 1-output head is regression."""
    outputs = int(head_config.get("num_labels", 0) or 0)
    if dev.is_regression and outputs != 1:
        raise UsageError(f"{adapter_dir}: regression data (--regression), but the adapter has a classification head "
                         f"with {outputs} labels; evaluate it on classification data")
    if not dev.is_regression and outputs == 1:
        raise UsageError(f"{adapter_dir}: classification data, but the adapter has a regression head (1 output); "
                         "add --regression for numeric labels")


def max_length_for(requested: int | None, model, default: int = 128) -> int:
    """--max-length, checked against the model's positions; by default 128, or the model's limit if smaller."""
    from .models import max_positions
    limit = max_positions(model)
    if requested is None:
        return default if limit is None else min(default, limit)
    if limit is not None and requested > limit:
        raise UsageError(f"--max-length {requested} exceeds the model's {limit} positions; allowed: "
                         f"--max-length <= {limit}")
    return requested
