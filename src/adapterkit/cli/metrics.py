"""Evaluation metrics of the GLUE tasks we reproduce (no scikit-learn / scipy needed)."""

from __future__ import annotations

import numpy as np


def accuracy(preds, labels) -> float:
    return float((np.asarray(preds) == np.asarray(labels)).mean())


def f1(preds, labels, positive: int = 1) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = float(((preds == positive) & (labels == positive)).sum())
    fp = float(((preds == positive) & (labels != positive)).sum())
    fn = float(((preds != positive) & (labels == positive)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def pearsonr(preds, labels) -> float:
    a, b = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom else 0.0


def spearmanr(preds, labels) -> float:
    return pearsonr(_ranks(np.asarray(preds, dtype=float)), _ranks(np.asarray(labels, dtype=float)))


def classification_metrics(preds, labels) -> dict:
    out = {"accuracy": accuracy(preds, labels)}
    if len(set(np.asarray(labels).tolist()) | set(np.asarray(preds).tolist())) <= 2:
        out["f1"] = f1(preds, labels)
    return out


def regression_metrics(preds, labels) -> dict:
    return {"pearsonr": pearsonr(preds, labels), "spearmanr": spearmanr(preds, labels)}
