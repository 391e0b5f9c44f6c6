"""`adapterkit train --task causal-lm | seq2seq`: fine-tune an adapter (or the whole model) on JSONL text, with
the loss on the completion tokens only; saves the adapter, the tokenizer and metrics.json (dev perplexity)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .errors import UsageError
from .lm_models import QUANTIZE

DEFAULT_MAX_LENGTH = 512


def add_arguments(p) -> None:
    """The options only the language-modelling tasks read (the rest are train's own)."""
    g = p.add_argument_group("language modelling", "--task causal-lm / seq2seq: JSONL --train-file with 'text', "
                             "'prompt' + 'completion', chat 'messages' (seq2seq: 'source' + 'target'); the loss is "
                             f"on the completion only; --max-length defaults to {DEFAULT_MAX_LENGTH} here")
    g.add_argument("--packing", action="store_true",
                   help="causal-lm: concatenate the examples and cut them into --max-length blocks (labels kept)")
    g.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="load the base with bitsandbytes (QLoRA): 4bit (nf4) or 8bit weights, float32 adapters; "
                        "needs `pip install adapterkit[quant]`")


class ListDataset:
    """A list of tokenised examples as the Trainer wants a data set."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def max_length_for_lm(requested: int | None, model) -> int:
    from .models import max_positions
    from .pipeline import max_length_for
    limit = max_positions(model)
    default = DEFAULT_MAX_LENGTH if limit is None else min(DEFAULT_MAX_LENGTH, limit)
    return max_length_for(requested, model, default=default)


def freeze_outside_adapters(model) -> None:
    """train_adapter leaves modules outside the base model trainable (a new classifier head must learn). Here
    nothing but the adapter is saved, so anything else that trained (an LM head, say) would make the saved adapter
    reproduce something other than what was trained: only the adapter's own weights train."""
    adapter = {id(p) for p in model.adapter_state.container.parameters()}
    for p in model.parameters():
        if id(p) not in adapter:
            p.requires_grad_(False)


def run(args, task: str) -> int:
    from .models import offline
    offline()
    import torch
    from transformers import TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    import adapterkit

    from .learned import check_learned
    from .lm_data import Collator, load_lm, pad_id
    from .lm_metrics import perplexity
    from ..quantized import is_quantized
    from .lm_models import load_lm_model, load_tokenizer
    from .models import resolve_model_path
    from .outputs import check_written, output_dir

    if not args.train_file:
        raise UsageError(f"--task {task} needs --train-file (JSONL; --dev-file optional)")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.name or task.replace("-", "_")
    out = output_dir(args.output_dir or f"runs/{name}")
    full = args.method == "full"
    config = None if full else adapterkit.resolve_config(args.method)
    if args.model in (None, "minilm"):
        raise UsageError(f"--task {task} needs --model: a local {'encoder-decoder' if task == 'seq2seq' else 'decoder'} "
                         "checkpoint directory with its tokenizer (the default MiniLM is an encoder)")
    path = resolve_model_path(args.model)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(path)
    if full and getattr(args, "quantize", None):
        raise UsageError(f"--quantize {args.quantize} trains adapters on a frozen quantized base; --method full "
                         "would train the quantized weights themselves: pick an adapter method")
    model, task = load_lm_model(path, task, getattr(args, "quantize", None))
    seq2seq = task == "seq2seq"
    max_length = max_length_for_lm(args.max_length, model)
    packing = getattr(args, "packing", False)
    train = load_lm(args.train_file, tokenizer, max_length, seq2seq, packing, args.max_train_samples)
    dev = load_lm(args.dev_file or args.train_file, tokenizer, max_length, seq2seq, packing,
                  args.max_eval_samples)
    if full:
        model.train()
    else:
        model.add_adapter(name, config=config)
        model.train_adapter(name)
        freeze_outside_adapters(model)
    print(model.adapter_summary())
    print(f"{len(train)} training examples ({train.fmt} format{', packed' if packing else ''}"
          f"{f'; {train.dropped} without a completion token within --max-length dropped' if train.dropped else ''})")

    history: list[dict] = []

    class Progress(TrainerCallback):
        def on_train_begin(self, targs, state, control, **kw):
            self.start, self.step0 = time.perf_counter(), state.global_step

        def on_log(self, targs, state, control, logs=None, **kw):
            if "loss" not in (logs or {}):
                return
            if not math.isfinite(logs["loss"]):
                control.should_training_stop = True
            history.append({"step": state.global_step, "loss": logs["loss"]})
            speed = (state.global_step - self.step0) * targs.per_device_train_batch_size / max(
                time.perf_counter() - self.start, 1e-9)
            print(f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  {speed:.1f} examples/s",
                  flush=True)

    steps_per_epoch = max(1, -(-len(train) // args.batch_size))
    lr = args.lr or (3e-5 if full else 1e-3)
    targs = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch_size, learning_rate=lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_ratio, num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1, eval_strategy="no", save_strategy="no", logging_nan_inf_filter=False,
        logging_steps=max(1, min(50, steps_per_epoch // 4)), report_to=[], seed=args.seed, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random")
    collator = Collator(pad_id(tokenizer))
    trainer = adapterkit.AdapterTrainer(model=model, args=targs, train_dataset=ListDataset(train.examples),
                                        data_collator=collator, callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    result = trainer.train()
    check_learned(model, history, result, lr)
    seconds = time.perf_counter() - start
    device = next(model.parameters()).device
    final = perplexity(model, dev.examples, collator, max(8, args.batch_size), device)

    saved = out / ("model" if full else "adapter")
    if full:
        model.save_pretrained(saved, state_dict={k: v for k, v in model.state_dict().items()
                                                 if not k.startswith("adapterkit.")})
    else:
        model.save_adapter(saved, name)
    check_written(saved, "the trained model" if full else "the adapter")
    tokenizer.save_pretrained(out / "tokenizer")
    if full:
        tokenizer.save_pretrained(saved)  # …/model is then a whole checkpoint (`generate --model …/model`)
    report = {"task": task, "format": train.fmt, "packing": packing, "method": args.method, "name": name,
              "model": str(Path(path).resolve()), "quantize": getattr(args, "quantize", None),
              "quantized_modules": sum(is_quantized(m) for m in model.modules()),
              "train_examples": len(train), "dev_examples": len(dev),
              "max_length": max_length, "seed": args.seed, "steps": result.global_step,
              "train_seconds": round(seconds, 2), "train_loss": result.training_loss, "metrics": final,
              "main_metric": "perplexity", "history": history, "saved": str(saved)}
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    if not args.no_plot:
        from .plot import plot_training_curve
        plot_training_curve(history, out / "training_curve.png", "perplexity")
    print(f"dev perplexity: {final['perplexity']:.4f}  ({final['tokens']} completion tokens; "
          f"{result.global_step} steps in {seconds:.0f} s)")
    print(f"saved: {saved}  metrics: {out / 'metrics.json'}")
    return 0
