"""Per-example routing speed: a batch whose rows use 8 different LoRA adapters vs the same batch with one adapter.

adapterkit routes with `model(..., adapter_names=[...])` (vectorised: per-row A/B gathered, two bmm's per
projection); peft's mixed-batch inference (`adapter_names=` too, grouped by adapter) runs beside it. Every case
is timed round-robin in one process (one repetition of each per round); ratios are medians of per-round ratios
to adapterkit's one-adapter forward, so drift of a busy machine hits all cases alike. Target: routed <= 1.3x.

    python benchmarks/run_routing.py [--device cpu|cuda] [--batch 64] [--seq 128] [--adapters 8] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

import adapterkit


def make_model(config: BertConfig, device, dtype) -> BertModel:
    torch.manual_seed(0)
    return BertModel(config, add_pooling_layer=False).to(device=device, dtype=dtype).eval()


def timed(model, batch, device, **kwargs):
    def step():
        with torch.inference_mode():
            model(**batch, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def build_cases(config, batch, n_adapters: int, rank: int, device, dtype, with_peft: bool):
    rows = batch["input_ids"].shape[0]
    names = [f"a{i}" for i in range(n_adapters)]
    per_row = [names[i % n_adapters] for i in range(rows)]  # interleaved: no two neighbours share an adapter
    cases = {"plain forward": timed(make_model(config, device, dtype), batch, device)}

    ours = adapterkit.init(make_model(config, device, dtype))
    for name in names:
        ours.add_adapter(name, config=f"lora[r={rank},alpha={2 * rank},init_weights=bert]")
    ours.set_active_adapters(names[0])
    cases["adapterkit, one adapter"] = timed(ours, batch, device)
    cases[f"adapterkit, {n_adapters} adapters routed (adapter_names)"] = timed(ours, batch, device,
                                                                                adapter_names=per_row)
    if with_peft:
        from peft import LoraConfig, get_peft_model
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["query", "value"],
                          init_lora_weights=False)
        theirs = get_peft_model(make_model(config, device, dtype), lora, adapter_name=names[0])
        for name in names[1:]:
            theirs.add_adapter(name, lora)
        theirs.set_adapter(names[0])
        theirs.eval()
        cases["peft, one adapter"] = timed(theirs, batch, device)
        cases[f"peft, {n_adapters} adapters mixed batch (adapter_names)"] = timed(theirs, batch, device,
                                                                                   adapter_names=per_row)
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for a smoke run")
    parser.add_argument("--no-peft", action="store_true")
    parser.add_argument("--out", default="bench-out/routing.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.tiny:
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            vocab_size=99)
    else:
        config = BertConfig(num_hidden_layers=args.layers)  # bert-base: 768 hidden, 12 heads, 3072 FFN
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g).to(device),
             "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long, device=device)}
    with_peft = not args.no_peft
    if with_peft:
        try:
            import peft  # noqa: F401
        except ImportError:
            with_peft = False
    cases = build_cases(config, batch, args.adapters, args.rank, device, dtype, with_peft)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.warmup + args.rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)

    reference = times["adapterkit, one adapter"]
    rows = [{"case": name, "median_s": statistics.median(t),
             "ratio": statistics.median([a / b for a, b in zip(t, reference)]),
             "min_s": min(t), "max_s": max(t)} for name, t in times.items()]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.machine()} {platform.processor() or ''} CPU, {args.threads} threads".strip()
    meta = {"date": date.today().isoformat(), "device": where, "torch": torch.__version__,
            "shape": f"batch {args.batch} x {args.seq} tokens, {config.num_hidden_layers} layers, hidden "
                     f"{config.hidden_size}, {args.dtype}; {args.adapters} LoRA adapters r={args.rank} on q, v",
            "rounds": args.rounds}
    print(f"# {meta['shape']}; {meta['device']}; {args.rounds} rounds, medians; {meta['date']}")
    print("| case | median (ms) | ratio to adapterkit one adapter (median of per-round ratios) |")
    print("| --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['case']} | {row['median_s'] * 1000:.1f} | {row['ratio']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
