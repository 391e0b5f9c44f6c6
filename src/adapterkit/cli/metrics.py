"""Evaluation metrics, computed by scikit-learn and scipy (not the `evaluate` package: it fetches metric scripts
from the Hub at run time). Each GLUE task gets its official set; files get accuracy (+ F1 when binary)."""

from __future__ import annotations

import numpy as np


def accuracy(preds, labels) -> float:
    from sklearn.metrics import accuracy_score
    return float(accuracy_score(labels, preds))


def f1(preds, labels, positive: int = 1) -> float:
    from sklearn.metrics import f1_score
    return float(f1_score(labels, preds, pos_label=positive, average="binary", zero_division=0))


def macro_f1(preds, labels) -> float:
    from sklearn.metrics import f1_score
    return float(f1_score(labels, preds, average="macro", zero_division=0))


def matthews(preds, labels) -> float:
    from sklearn.metrics import matthews_corrcoef
    return float(matthews_corrcoef(labels, preds))


def _correlation(fn, preds, labels) -> float:
    a, b = np.asarray(preds, dtype=float).reshape(-1), np.asarray(labels, dtype=float).reshape(-1)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # undefined for constant inputs (scipy warns and returns NaN); an untrained model's case
    return float(fn(a, b).statistic)


def pearsonr(preds, labels) -> float:
    from scipy.stats import pearsonr as scipy_pearsonr
    return _correlation(scipy_pearsonr, preds, labels)


def spearmanr(preds, labels) -> float:
    from scipy.stats import spearmanr as scipy_spearmanr
    return _correlation(scipy_spearmanr, preds, labels)


def classification_metrics(preds, labels) -> dict:
    out = {"accuracy": accuracy(preds, labels)}
    if len(set(np.asarray(labels).tolist()) | set(np.asarray(preds).tolist())) <= 2:
        out["f1"] = f1(preds, labels)
    return out


def regression_metrics(preds, labels) -> dict:
    return {"pearsonr": pearsonr(preds, labels), "spearmanr": spearmanr(preds, labels)}


def glue_metrics(kind: str, preds, labels) -> dict:
    """The official metrics of a GLUE task's metric set (glue.GlueTask.metrics)."""
    if kind == "matthews":
        return {"matthews_correlation": matthews(preds, labels), "accuracy": accuracy(preds, labels)}
    if kind == "f1_accuracy":
        return {"f1": f1(preds, labels), "accuracy": accuracy(preds, labels)}
    if kind == "correlation":
        return regression_metrics(preds, labels)
    return {"accuracy": accuracy(preds, labels)}


def tagging_metrics(preds, labels) -> dict:
    """Word-level accuracy and macro F1 over the tag classes (positions labelled -100 do not count).

    Entity-level F1 (seqeval) is not computed: seqeval is not available offline, and macro F1 over tags is what
    scikit-learn offers."""
    preds, labels = np.asarray(preds).reshape(-1), np.asarray(labels).reshape(-1)
    keep = labels != -100
    return {"token_accuracy": accuracy(preds[keep], labels[keep]), "macro_f1": macro_f1(preds[keep], labels[keep])}


def multiple_choice_metrics(preds, labels) -> dict:
    return {"accuracy": accuracy(preds, labels)}
