"""Quality parity: the same fine-tuning run in adapterkit and in `adapters` (MiniLM on RTE, MRPC, STS-B dev).

Everything but the adapter library is shared: the tokenized data (tokenized once by run_all.py and saved as
tensors, so both processes train on identical ids), the example order (a seeded `random.Random`, not torch's RNG),
the classification head's initial weights (drawn from a seeded generator after loading), the optimizer, schedule and
hyperparameters, and the torch seed for dropout, set right before the first step.

Initial adapter weights: with `shared_init` (the default of run_all.py) adapterkit draws them once per method and
seed and writes them in the AdapterHub format; both libraries load that directory, so a run differs between the
libraries only by their forward/backward arithmetic (and dropout masks, where the two transformers versions draw
them differently). Without it each library uses its own init under the same seed, which adds seed noise.

The GLUE files are read from their place (run_all.py: `--glue-dir`, `GLUE_DIR`, else ../shared/data/glue from the
repository root; see its SOURCE.md); nothing is copied.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

# task -> (folder, sentence columns (second None: one sentence), label column, number of labels (1: regression),
# main metric). SST-2 is not one of the parity tasks; it learns in few steps, so it checks parity cheaply.
TASKS = {
    "rte": ("RTE", (1, 2), 3, 2, "accuracy"),
    "mrpc": ("MRPC", (3, 4), 0, 2, "f1"),
    "stsb": ("STS-B", (7, 8), 9, 1, "spearman"),
    "sst2": ("SST-2", (0, None), 1, 2, "accuracy"),
}
METHODS = ("pfeiffer", "lora", "prefix")
# One learning rate per method, the same in both libraries (adapter-style rates; the head trains with it too).
LEARNING_RATES = {"pfeiffer": 1e-3, "lora": 1e-3, "prefix": 5e-3}
RTE_LABELS = {"entailment": 1, "not_entailment": 0}


def parse_learning_rates(text: str) -> dict:
    """'prefix=3e-3,lora=5e-4' over LEARNING_RATES (unknown methods are an error)."""
    rates = dict(LEARNING_RATES)
    for item in filter(None, (t.strip() for t in text.split(","))):
        method, sep, value = item.partition("=")
        if not sep or method not in rates:
            raise ValueError(f"bad learning rate {item!r}: use method=value with methods {', '.join(rates)}")
        rates[method] = float(value)
    return rates


@dataclass
class Budget:
    """How much of each task to run. `train`/`dev`: max examples (None: all), `seq`: max tokens per pair."""

    train: Optional[int] = 1000
    dev: Optional[int] = None
    epochs: int = 1
    seq: int = 128
    batch: int = 16

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """'train=400,epochs=1,seq=128' (any subset of the fields; 'all' for no limit)."""
        fields = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in cls.__dataclass_fields__:
                raise ValueError(f"bad budget item {item!r}: use key=value with keys "
                                 f"{', '.join(cls.__dataclass_fields__)}")
            fields[key] = None if value == "all" else int(value)
        return cls(**fields)

    def to_dict(self) -> dict:
        return asdict(self)


FULL_BUDGET = Budget(train=None, dev=None, epochs=3, seq=128, batch=16)


def read_task(glue_dir: Path, task: str, split: str) -> tuple[list, list]:
    """(sentence pairs, labels) of a GLUE split; tab-split lines, no CSV quoting (see SOURCE.md)."""
    folder, (a, b), label_col, num_labels, _ = TASKS[task]
    path = Path(glue_dir) / folder / f"{split}.tsv"
    lines = path.read_text(encoding="utf-8-sig").split("\n")[1:]
    pairs, labels = [], []
    for line in filter(None, lines):
        cols = line.split("\t")
        pairs.append((cols[a], None if b is None else cols[b]))
        raw = cols[label_col]
        if num_labels == 1:
            labels.append(float(raw))
        else:
            labels.append(RTE_LABELS[raw] if task == "rte" else int(raw))
    return pairs, labels


def tokenize_task(tokenizer, glue_dir: Path, task: str, budget: Budget, seed: int) -> dict:
    """Tensors of the (sub-sampled) train and dev splits, padded to budget.seq (batches are trimmed later)."""
    out = {}
    for split, limit in (("train", budget.train), ("dev", budget.dev)):
        pairs, labels = read_task(glue_dir, task, split)
        if limit is not None and limit < len(pairs):
            keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
            pairs, labels = [pairs[i] for i in keep], [labels[i] for i in keep]
        second = None if TASKS[task][1][1] is None else [p[1] for p in pairs]
        enc = tokenizer([p[0] for p in pairs], second, truncation=True, max_length=budget.seq,
                        padding="max_length", return_tensors="pt")
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            out[f"{split}.{key}"] = enc[key]
        dtype = torch.float32 if TASKS[task][3] == 1 else torch.long
        out[f"{split}.labels"] = torch.tensor(labels, dtype=dtype)
    return out


def _batch(data: dict, split: str, index, device: str) -> dict:
    """The rows `index` of a split, trimmed to its longest sequence."""
    mask = data[f"{split}.attention_mask"][index]
    length = int(mask.sum(1).max())
    return {key: data[f"{split}.{key}"][index][:, :length].to(device)
            for key in ("input_ids", "attention_mask", "token_type_ids")}


def metrics(task: str, predictions: torch.Tensor, labels: torch.Tensor) -> dict:
    if TASKS[task][3] == 1:
        return {"pearson": _pearson(predictions, labels), "spearman": _pearson(_ranks(predictions), _ranks(labels))}
    accuracy = (predictions == labels).float().mean().item()
    tp = ((predictions == 1) & (labels == 1)).sum().item()
    precision = tp / max(1, (predictions == 1).sum().item())
    recall = tp / max(1, (labels == 1).sum().item())
    return {"accuracy": accuracy, "f1": 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)}


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / denom if denom else 0.0


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks with ties given their average rank (as Spearman's rho needs)."""
    values = x.double().tolist()
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return torch.tensor(ranks)


def _load_model(model_path: str, num_labels: int):
    from transformers import BertForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()  # the "classifier weights are newly initialised" report: expected here
    logging.disable_progress_bar()
    return BertForSequenceClassification.from_pretrained(model_path, num_labels=num_labels)


def init_key(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def make_initial_adapters(model_path: str, runs: list, out_dir: Path) -> dict:
    """adapterkit's initial adapter of each (method, seed) in `runs`, saved in the AdapterHub format (no head);
    returns {init_key: directory}. Drawn under `torch.manual_seed(seed)` as an own-init run would draw it."""
    import adapterkit

    from cases_hub import method_config

    dirs = {}
    for method, seed in sorted({(r["method"], r["seed"]) for r in runs}):
        model = adapterkit.init(_load_model(model_path, 2))
        torch.manual_seed(seed)
        model.add_adapter(method, config=method_config(adapterkit, method))
        path = Path(out_dir) / init_key(method, seed)
        model.save_adapter(path, method, with_head=False, format="adapterhub")
        dirs[init_key(method, seed)] = str(path)
    return dirs


def train_and_evaluate(library: str, task: str, method: str, seed: int, budget: Budget, data: dict,
                       model_path: str, device: str = "cpu", init_dir: Optional[str] = None,
                       learning_rates: Optional[dict] = None) -> dict:
    """One run: MiniLM + a fresh task head + one adapter of `method` (drawn by the library, or loaded from
    `init_dir`), trained on the task, scored on dev."""
    from cases_hub import method_config

    lib = importlib.import_module(library)
    num_labels = TASKS[task][3]
    model = _load_model(model_path, num_labels)
    head = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=head) * 0.02)
        model.classifier.bias.zero_()
    torch.manual_seed(seed)
    lib.init(model)
    if init_dir is None:
        model.add_adapter(method, config=method_config(lib, method))
    elif library == "adapters":
        model.load_adapter(str(init_dir), load_as=method, use_safetensors=True)
    else:
        model.load_adapter(init_dir, load_as=method, format="adapterhub")
    model.train_adapter(method)
    model.to(device)
    torch.manual_seed(seed)  # dropout draws start from the same state in both libraries
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = len(data["train.labels"])
    steps = budget.epochs * math.ceil(n_train / budget.batch)
    warmup = max(1, steps // 10)
    optimizer = torch.optim.AdamW(params, lr=(learning_rates or LEARNING_RATES)[method], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    start = time.perf_counter()
    model.train()
    for epoch in range(budget.epochs):
        order = list(range(n_train))
        random.Random(seed * 1000 + epoch).shuffle(order)
        for i in range(0, n_train, budget.batch):
            index = torch.tensor(order[i:i + budget.batch])
            labels = data["train.labels"][index].to(device)
            loss = model(**_batch(data, "train", index, device), labels=labels).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - start
    model.eval()
    predictions = []
    with torch.no_grad():
        for i in range(0, len(data["dev.labels"]), 64):
            index = torch.arange(i, min(i + 64, len(data["dev.labels"])))
            logits = model(**_batch(data, "dev", index, device)).logits.cpu()
            predictions.append(logits[:, 0] if num_labels == 1 else logits.argmax(-1))
    scores = metrics(task, torch.cat(predictions), data["dev.labels"])
    return {"library": library, "task": task, "method": method, "seed": seed, "scores": scores,
            "main": scores[TASKS[task][4]], "metric": TASKS[task][4], "final_loss": loss.item(), "steps": steps,
            "train_s": train_s, "trainable_params": sum(p.numel() for p in params),
            "shared_init": init_dir is not None, "device": device,
            "learning_rate": (learning_rates or LEARNING_RATES)[method]}


def run_jobs(library: str, spec: dict, progress: Optional[Path] = None) -> list:
    """spec: {budget: {...}, threads, device, model_path, data: {task: tensor file}, runs: [{task, method, seed}],
    init: {init_key: AdapterHub dir} (optional: shared initial adapters)}. Each result is also appended to
    `progress` (JSON lines) as it comes, so a run cut short keeps what it finished."""
    torch.set_num_threads(spec.get("threads", 2))
    budget = Budget(**spec["budget"])
    init = spec.get("init") or {}
    results, cache = [], {}
    for run in spec["runs"]:
        task = run["task"]
        if task not in cache:
            cache[task] = torch.load(spec["data"][task], weights_only=True)
        results.append(train_and_evaluate(library, task, run["method"], run["seed"], budget, cache[task],
                                          spec["model_path"], spec.get("device", "cpu"),
                                          init.get(init_key(run["method"], run["seed"])),
                                          spec.get("learning_rates")))
        if progress is not None:
            with open(progress, "a", encoding="utf-8") as f:
                f.write(json.dumps(results[-1]) + "\n")
    return results
