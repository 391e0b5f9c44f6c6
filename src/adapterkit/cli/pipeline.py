"""What `train` and `eval` share: data selection, the head of the data's kind, label checks and metrics
(tokenising: encoding.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics
from .data import Dataset, DataError, demo_data, load_choices, load_glue, load_table, load_tagging
from .errors import UsageError
from .glue import GLUE_TASKS, glue_task

# --task values that read --train-file / --dev-file (the GLUE names read --data-dir)
FILE_TASKS = {"classification": "classification", "regression": "regression", "token-classification": "tagging",
              "ner": "tagging", "tagging": "tagging", "multiple-choice": "multiple_choice",
              "multiple_choice": "multiple_choice"}
MAIN_METRIC = {"classification": "accuracy", "regression": "spearmanr", "tagging": "token_accuracy",
               "multiple_choice": "accuracy"}


def task_kind(args) -> str | None:
    """The kind of a file task (--task, or --regression), None for GLUE and the demo."""
    task = (args.task or "").lower()
    if task and glue_task(task) is None:
        if task not in FILE_TASKS:
            raise UsageError(f"unknown task {args.task!r}; available: {', '.join(GLUE_TASKS)} (GLUE, with "
                             f"--data-dir), or {', '.join(FILE_TASKS)}, causal-lm, seq2seq (with --train-file)")
        return FILE_TASKS[task]
    if args.train_file or args.dev_file:
        return "regression" if args.regression else "classification"
    return None


def _load_file(args, kind: str, path, split: str, limit, label_names=None) -> Dataset:
    text = args.text_column
    if kind == "tagging":
        return load_tagging(path, text or "tokens", args.label_column or "tags", label_names, limit, split)
    if kind == "multiple_choice":
        return load_choices(path, text or "question", args.choices_column or "choices", args.label_column or "label",
                            limit, split)
    return load_table(path, text or "text", args.pair_column, args.label_column or "label",
                      regression=kind == "regression", label_names=label_names, no_header=args.no_header,
                      limit=limit, split=split)


def load_splits(args, need_train: bool = True) -> tuple[Dataset | None, Dataset, str]:
    """(train, dev, main metric name). --max-train-samples / --max-eval-samples cap what is read, not only
    what is kept. The dev set's info["metrics"] names its metric set (metrics_for)."""
    kind = task_kind(args)
    train_limit, dev_limit = args.max_train_samples, args.max_eval_samples
    if args.task and kind is None:
        if not args.data_dir:
            raise UsageError("--task needs --data-dir (a folder in the GLUE layout, e.g. ../shared/data/glue)")
        spec = glue_task(args.task)
        train = load_glue(args.task, args.data_dir, "train", train_limit) if need_train else None
        dev = load_glue(args.task, args.data_dir, "dev", dev_limit)
        metric = spec.main
    elif kind is not None:
        if need_train and not args.train_file:
            raise UsageError("--dev-file needs --train-file (or use --task with a GLUE task)")
        if not (args.train_file or args.dev_file):
            raise UsageError(f"--task {args.task} needs --train-file (and optionally --dev-file)")
        train = _load_file(args, kind, args.train_file, "train", train_limit) if need_train else None
        dev_path, split = (args.dev_file, "train") if args.dev_file else (args.train_file, "dev")
        if not args.dev_file and Path(str(args.train_file)).is_file():
            split = "train"  # one file is train and dev; a folder / Hub id has a dev split
        names = None if kind == "regression" or train is None else train.label_names
        dev = _load_file(args, kind, dev_path, split, dev_limit, names if kind != "multiple_choice" else None)
        metric = MAIN_METRIC[kind]
    else:
        train, dev = demo_data(seed=getattr(args, "seed", 0))
        metric = "accuracy"
    if train is not None:
        train = train.subset(args.max_train_samples)
    return train, dev.subset(args.max_eval_samples), metric


def eval_sets(dev: Dataset) -> dict[str, Dataset] | Dataset:
    """The dev split, or {name: split} when a task has several (MNLI matched / mismatched)."""
    if not dev.info.get("also"):
        return dev
    return {dev.info["split"]: dev, **dev.info["also"]}


def metrics_for(dev: Dataset, logits, labels) -> dict:
    """The dev set's metrics from the logits: a GLUE task's official set, or its kind's."""
    logits = np.asarray(logits)
    if dev.info.get("metrics"):
        preds = logits.reshape(-1) if dev.is_regression else logits.argmax(-1)
        return metrics.glue_metrics(dev.info["metrics"], preds, labels)
    if dev.kind == "regression":
        return metrics.regression_metrics(logits.reshape(-1), labels)
    if dev.kind == "tagging":
        return metrics.tagging_metrics(logits.argmax(-1), labels)
    if dev.kind == "multiple_choice":
        return metrics.multiple_choice_metrics(logits.argmax(-1), labels)
    return metrics.classification_metrics(logits.argmax(-1), labels)


def compute_metrics_fn(dev: Dataset):
    def compute(eval_pred):
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        return metrics_for(dev, logits, labels)
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
    """The data's kind must be the head's: tagging and multiple choice their heads; a 1-output classification
    head is regression."""
    head_type = head_config.get("head_type", "classification")
    wanted = dev.kind if dev.kind in ("tagging", "multiple_choice") else "classification"
    if head_type != wanted:
        raise UsageError(f"{adapter_dir}: the adapter has a {head_type!r} head, but the data is for a {wanted!r} "
                         "head; give data of the task it was trained on (--task)")
    if wanted != "classification":
        return
    outputs = int(head_config.get("num_labels", 0) or 0)
    if dev.is_regression and outputs != 1:
        raise UsageError(f"{adapter_dir}: regression data (--regression), but the adapter has a classification head "
                         f"with {outputs} labels; evaluate it on classification data")
    if not dev.is_regression and outputs == 1:
        raise UsageError(f"{adapter_dir}: classification data, but the adapter has a regression head (1 output); "
                         "add --regression for numeric labels")


def relabel(dev: Dataset, label2id: dict) -> Dataset:
    """Dev labels in the head's numbering (a dev set may hold only some of the head's labels)."""
    if dev.label_names is None or not label2id or dev.kind == "multiple_choice":
        return dev
    head_names = sorted(label2id, key=label2id.get)
    unknown = [n for n in dev.label_names if n not in label2id]
    if unknown:
        raise UsageError(f"labels of the data {unknown} are not among the head's {head_names}")
    index = [label2id[n] for n in dev.label_names]
    labels = ([[index[t] for t in tags] for tags in dev.labels] if dev.kind == "tagging"
              else [index[y] for y in dev.labels])
    info = dict(dev.info)
    if "also" in info:
        info["also"] = {k: relabel(v, label2id) for k, v in info["also"].items()}
    return Dataset(dev.texts, labels, dev.text_pairs, head_names, info, dev.kind)


def add_head(model, name: str, train: Dataset) -> None:
    """The head of the data's kind, with its label names."""
    id2label = None if train.is_regression else dict(enumerate(train.label_names))
    if train.kind == "tagging":
        model.add_tagging_head(name, num_labels=len(train.label_names), id2label=id2label)
    elif train.kind == "multiple_choice":
        model.add_multiple_choice_head(name, num_choices=len(train.label_names))
    else:
        model.add_classification_head(name, num_labels=1 if train.is_regression else len(train.label_names),
                                      id2label=id2label)


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
