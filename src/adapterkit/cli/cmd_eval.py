"""`adapterkit eval`: evaluate a saved adapter (+ head) on a data set."""

from __future__ import annotations

import json

ORDER = 2


def register(sub) -> None:
    from .arguments import add_data_arguments, non_negative_int, positive_int
    p = sub.add_parser("eval", help="evaluate a saved adapter and head",
                       description="Load the base model and a saved adapter directory (adapterkit, AdapterHub or PEFT "
                                   "format, with its head) and report the metrics on the dev split.")
    p.add_argument("--adapter-dir", required=True, help="directory written by `adapterkit train` (…/adapter)")
    p.add_argument("--model", default="minilm", help="checkpoint directory or 'minilm' (default)")
    add_data_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the demo data (when no data is given)")
    p.add_argument("--output", default=None, help="write the metrics JSON here too")
    p.set_defaults(run=run)


def predictions(model, tokenizer, data, batch_size: int, max_length: int):
    import numpy as np
    import torch
    outs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            pairs = data.text_pairs[i:i + batch_size] if data.text_pairs is not None else None
            enc = tokenizer(data.texts[i:i + batch_size], pairs, truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            outs.append(model(**enc).logits.float().numpy())
    logits = np.concatenate(outs)
    return logits.reshape(-1) if data.is_regression else logits.argmax(-1)


def run(args) -> int:
    from .lm_models import lm_task
    if lm_task(args):  # --task causal-lm / seq2seq: perplexity on a JSONL dev file (lm_eval.py)
        from .lm_eval import run as run_lm
        return run_lm(args, lm_task(args))
    from .models import offline
    offline()
    from pathlib import Path

    from transformers import AutoTokenizer

    import adapterkit

    from . import metrics
    from .errors import UsageError
    from .models import resolve_model_path
    from .outputs import output_file
    from .pipeline import check_head_fits, load_splits, max_length_for

    adapter_dir = Path(args.adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UsageError(f"{adapter_dir}: no adapter_config.json (give the adapter directory that train saved)")
    output = output_file(args.output) if args.output else None
    _, dev, metric = load_splits(args, need_train=False)
    path = resolve_model_path(args.model)
    tokenizer_dir = adapter_dir.parent / "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir if tokenizer_dir.is_dir() else path, local_files_only=True)
    model = adapterkit.AutoAdapterModel.from_pretrained(path, local_files_only=True)
    name = model.load_adapter(adapter_dir, set_active=True)
    if name not in model.heads:
        raise UsageError(f"{adapter_dir}: no head saved with adapter {name!r}; evaluation needs one")
    check_head_fits(model.heads[name].config, dev, adapter_dir)
    labels = model.heads[name].config.get("label2id") or {}
    if dev.label_names is not None and labels and sorted(labels, key=labels.get) != dev.label_names:
        raise UsageError(f"labels of the data {dev.label_names} differ from the head's {sorted(labels, key=labels.get)}")
    preds = predictions(model, tokenizer, dev, args.batch_size, max_length_for(args.max_length, model))
    result = (metrics.regression_metrics(preds, dev.labels) if dev.is_regression
              else metrics.classification_metrics(preds, dev.labels))
    report = {"adapter": name, "examples": len(dev), "metrics": result, "main_metric": metric}
    print(json.dumps(report, indent=2))
    if output is not None:
        output.write_text(json.dumps(report, indent=2))
    return 0
