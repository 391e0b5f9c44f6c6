"""The GLUE tasks in their distributed folder layout (<data-dir>/<TASK>/train.tsv, dev.tsv, ...): which columns
hold the text(s) and label, their quirks (CoLA has no header, MNLI two dev files), and each task's official
metrics (GLUE paper / the release notes' table)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GlueTask:
    dir: str
    text: str
    pair: str | None
    label: str
    metrics: str  # the metric set in metrics.glue_metrics
    main: str  # the metric named in progress lines and metrics.json["main_metric"]
    labels: tuple | None = ("0", "1")  # fixed, so a small slice with one class still maps its labels right
    header: bool = True
    regression: bool = False
    dev: dict = field(default_factory=lambda: {"": "dev"})  # split name prefix -> file stem


NLI2 = ("entailment", "not_entailment")
GLUE_TASKS = {
    # CoLA: headerless, columns (source, label, original-label mark, sentence)
    "cola": GlueTask("CoLA", "3", None, "1", "matthews", "matthews_correlation", header=False),
    "sst2": GlueTask("SST-2", "sentence", None, "label", "accuracy", "accuracy"),
    "mrpc": GlueTask("MRPC", "#1 String", "#2 String", "Quality", "f1_accuracy", "f1"),
    "stsb": GlueTask("STS-B", "sentence1", "sentence2", "score", "correlation", "spearmanr", labels=None,
                      regression=True),
    "qqp": GlueTask("QQP", "question1", "question2", "is_duplicate", "f1_accuracy", "f1"),
    "mnli": GlueTask("MNLI", "sentence1", "sentence2", "gold_label", "accuracy", "matched_accuracy",
                     labels=("contradiction", "entailment", "neutral"),
                     dev={"matched": "dev_matched", "mismatched": "dev_mismatched"}),
    "qnli": GlueTask("QNLI", "question", "sentence", "label", "accuracy", "accuracy",
                     labels=NLI2),
    "rte": GlueTask("RTE", "sentence1", "sentence2", "label", "accuracy", "accuracy", labels=NLI2),
    "wnli": GlueTask("WNLI", "sentence1", "sentence2", "label", "accuracy", "accuracy"),
}


def glue_task(name: str) -> GlueTask | None:
    return GLUE_TASKS.get(name.lower().replace("-", "").replace("_", ""))
