"""Argument types shared by the commands (a bad value is an argparse error: one line, exit 2, before any work),
and the data arguments of `train` and `eval`. Stdlib only: the parser is built before anything heavy loads."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind, allowed: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed is {allowed}") from None


def int_at_least(low: int):
    """An integer >= low (batch sizes, threads, steps, lengths, sample counts)."""
    allowed = f"an integer >= {low}"

    def parse(text: str) -> int:
        value = _number(text, int, allowed)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r}: allowed is {allowed}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(low: float = 0.0, high: float | None = None, low_inclusive: bool = False):
    """A finite float above `low` (or at it, with low_inclusive) and at most `high`: NaN and inf never pass."""
    if high is not None:
        allowed = f"a number between {low:g} and {high:g}"
    else:
        allowed = f"a finite number {'>=' if low_inclusive else '>'} {low:g}"

    def parse(text: str) -> float:
        value = _number(text, float, allowed)
        if (not math.isfinite(value) or value < low or (value == low and not low_inclusive)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"{text!r}: allowed is {allowed}")
        return value
    parse.__name__ = allowed
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = finite_float()
non_negative_float = finite_float(low_inclusive=True)
ratio = finite_float(0.0, 1.0, low_inclusive=True)


def add_data_arguments(p) -> None:
    g = p.add_argument_group("data (default: the built-in demo reviews)")
    g.add_argument("--task", help="GLUE task with --data-dir: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli; "
                                  "or, with --train-file: classification, regression, token-classification (ner), "
                                  "multiple-choice, causal-lm, seq2seq")
    g.add_argument("--data-dir", help="folder in the GLUE layout (<TASK>/train.tsv, dev.tsv; MNLI dev_matched.tsv, "
                                      "dev_mismatched.tsv; CoLA headerless)")
    g.add_argument("--train-file", help="CSV / TSV / JSON / JSONL / Parquet file, a datasets.save_to_disk folder, or "
                                        "a Hub dataset id in the local cache (never downloaded); token "
                                        "classification also reads CoNLL-style .conll / .txt")
    g.add_argument("--dev-file", help="evaluation data, same formats (default: the train data's dev split if a "
                                      "folder or Hub id has one, else the train file)")
    g.add_argument("--text-column", default=None,
                   help="name or 0-based index (default: text; tokens for token classification; question for "
                        "multiple choice)")
    g.add_argument("--pair-column", default=None, help="second text of a pair (name or index)")
    g.add_argument("--label-column", default=None,
                   help="name or 0-based index (default: label; tags for token classification)")
    g.add_argument("--choices-column", default=None, help="multiple choice: the list of choices (default: choices)")
    g.add_argument("--no-header", action="store_true",
                   help="CSV / TSV without a header row: columns are named by index, 0, 1, ... (implied when "
                        "every column is given as an index)")
    g.add_argument("--regression", action="store_true", help="numeric labels (one output, MSE loss)")
    g.add_argument("--max-train-samples", type=positive_int, default=None,
                   help="read only the first N training rows (streamed: a large file is not loaded whole)")
    g.add_argument("--max-eval-samples", type=positive_int, default=None, help="read only the first N dev rows")
    g.add_argument("--max-length", type=positive_int, default=None,
                   help="tokens per example (default: 128, or fewer if the model has fewer positions)")
