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


def logits_and_labels(model, tokenizer, data, batch_size: int, max_length: int):
    """Logits and labels over the data, batched with the collator training used (tagging: one row per token, so
    batches padded to different lengths concatenate)."""
    import numpy as np
    import torch

    from .encoding import Encoded, collator_for
    loader = torch.utils.data.DataLoader(Encoded(data, tokenizer, max_length), batch_size=batch_size,
                                         collate_fn=collator_for(data.kind, tokenizer))
    outs, labels = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            y = batch.pop("labels")
            logits = model(**batch).logits.float()
            if data.kind == "tagging":
                logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            outs.append(logits.numpy())
            labels.append(y.numpy())
    return np.concatenate(outs), np.concatenate(labels)


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

    from .errors import UsageError
    from .models import resolve_model_path
    from .outputs import output_file
    from .pipeline import check_head_fits, eval_sets, load_splits, max_length_for, metrics_for, relabel

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
    dev = relabel(dev, model.heads[name].config.get("label2id") or {})
    max_length = max_length_for(args.max_length, model)
    result = {}
    for split, data in ((eval_sets(dev).items()) if isinstance(eval_sets(dev), dict) else [("", dev)]):
        logits, labels = logits_and_labels(model, tokenizer, data, args.batch_size, max_length)
        result.update({f"{split}_{k}" if split else k: v for k, v in metrics_for(data, logits, labels).items()})
    report = {"adapter": name, "examples": len(dev), "metrics": result, "main_metric": metric}
    print(json.dumps(report, indent=2))
    if output is not None:
        output.write_text(json.dumps(report, indent=2))
    return 0
