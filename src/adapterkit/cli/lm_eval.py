"""`adapterkit eval --task causal-lm | seq2seq`: perplexity of a saved adapter on a JSONL dev file."""

from __future__ import annotations

import json
from pathlib import Path


def run(args, task: str) -> int:
    from .models import offline
    offline()
    from .errors import UsageError
    from .lm_data import Collator, load_lm, pad_id
    from .lm_metrics import perplexity
    from .lm_models import device, load_lm_model, load_tokenizer, model_for_adapter
    from .lm_train import max_length_for_lm
    from .models import resolve_model_path
    from .outputs import output_file

    adapter_dir = Path(args.adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UsageError(f"{adapter_dir}: no adapter_config.json (give the adapter directory that train saved)")
    if not args.dev_file:
        raise UsageError(f"--task {task} needs --dev-file (JSONL in the training file's format)")
    output = output_file(args.output) if args.output else None
    path = resolve_model_path(model_for_adapter(None if args.model in (None, "minilm") else args.model, adapter_dir))
    tokenizer = load_tokenizer(path, adapter_dir)
    model, task = load_lm_model(path, task)
    name = model.load_adapter(adapter_dir, set_active=True)
    dev = load_lm(args.dev_file, tokenizer, max_length_for_lm(args.max_length, model), task == "seq2seq",
                  getattr(args, "packing", False), args.max_eval_samples)
    model.to(device())
    result = perplexity(model, dev.examples, Collator(pad_id(tokenizer)), args.batch_size, device())
    report = {"adapter": name, "task": task, "format": dev.fmt, "examples": len(dev), "metrics": result,
              "main_metric": "perplexity"}
    print(json.dumps(report, indent=2))
    if output is not None:
        output.write_text(json.dumps(report, indent=2))
    return 0
