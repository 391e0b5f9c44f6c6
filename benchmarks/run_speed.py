"""Speed of adapterkit vs. the plain model (and peft) on a bert-base-shaped model: medians and ratios.

Every case is timed in the same process, round-robin (one repetition of each case per round), so drift of the
machine hits all cases alike. Ratios are to the plain model's forward (eval, inference mode) of the same run.

    python benchmarks/run_speed.py [--threads 2] [--batch 8] [--seq 128] [--rounds 10] [--layers 12] [--tiny]
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


def bert_base(layers: int, tiny: bool) -> BertConfig:
    if tiny:
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          vocab_size=99)
    return BertConfig(num_hidden_layers=layers)  # bert-base: 768 hidden, 12 heads, 3072 FFN, 30522 vocab


def make_model(config: BertConfig) -> BertModel:
    torch.manual_seed(0)
    return BertModel(config, add_pooling_layer=False)


def train_step_fn(model, params, batch):
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step():
        out = model(**batch).last_hidden_state
        loss = out.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def inference_fn(model, batch):
    model.eval()

    def step():
        with torch.inference_mode():
            model(**batch)
    return step


def build_cases(config, batch, with_peft: bool):
    cases = {}
    plain = make_model(config)
    cases["plain forward"] = inference_fn(plain, batch)

    # The floor of any exact frozen-base method: the model's own train-mode forward (dropout on) and a backward
    # through every layer, with no adapter at all (gradients flow from the embeddings output upwards).
    floor = make_model(config).train()
    floor.requires_grad_(False)
    floor.embeddings.register_forward_hook(lambda module, args, out: out.requires_grad_(True))

    def floor_step():
        floor(**batch).last_hidden_state.float().pow(2).mean().backward()
    cases["floor: frozen model backward, no adapter"] = floor_step

    full = make_model(config).train()
    cases["full fine-tune step"] = train_step_fn(full, list(full.parameters()), batch)

    lora = adapterkit.init(make_model(config))
    lora.add_adapter("lora", config="lora[r=8,alpha=16]")
    lora.train_adapter("lora")
    cases["adapterkit LoRA r=8 train step"] = train_step_fn(
        lora, [p for p in lora.parameters() if p.requires_grad], batch)

    lora_inf = adapterkit.init(make_model(config))
    lora_inf.add_adapter("lora", config="lora[r=8,alpha=16]", set_active=True)
    cases["adapterkit LoRA inference (unmerged)"] = inference_fn(lora_inf, batch)

    lora_merged = adapterkit.init(make_model(config))
    lora_merged.add_adapter("lora", config="lora[r=8,alpha=16]", set_active=True)
    lora_merged.merge_adapter("lora")
    cases["adapterkit LoRA inference (merged)"] = inference_fn(lora_merged, batch)

    pf = adapterkit.init(make_model(config))
    pf.add_adapter("pf", config="pfeiffer")
    pf.train_adapter("pf")
    cases["adapterkit Pfeiffer train step"] = train_step_fn(pf, [p for p in pf.parameters() if p.requires_grad], batch)
    cases["adapterkit Pfeiffer inference"] = inference_fn(pf, batch)

    prefix = adapterkit.init(make_model(config))
    prefix.add_adapter("prefix", config="prefix_tuning[prefix_length=30]", set_active=True)
    cases["adapterkit prefix tuning (30) inference"] = inference_fn(prefix, batch)

    unipelt = adapterkit.init(make_model(config))
    unipelt.add_adapter("unipelt", config="unipelt")
    unipelt.train_adapter("unipelt")
    cases["adapterkit UniPELT train step"] = train_step_fn(
        unipelt, [p for p in unipelt.parameters() if p.requires_grad], batch)

    if with_peft:
        from peft import LoraConfig, get_peft_model
        peft_model = get_peft_model(make_model(config), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                                   target_modules=["query", "value"]))
        peft_model.train()
        cases["peft LoRA r=8 train step"] = train_step_fn(
            peft_model, [p for p in peft_model.parameters() if p.requires_grad], batch)
        peft_inf = get_peft_model(make_model(config), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                                 target_modules=["query", "value"]))
        cases["peft LoRA inference (unmerged)"] = inference_fn(peft_inf, batch)
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a tiny model, for a smoke run")
    parser.add_argument("--no-peft", action="store_true")
    parser.add_argument("--out", default="bench-out/speed.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    config = bert_base(args.layers, args.tiny)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g),
             "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long)}
    with_peft = not args.no_peft
    if with_peft:
        try:
            import peft  # noqa: F401
        except ImportError:
            with_peft = False
    cases = build_cases(config, batch, with_peft)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.warmup + args.rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)

    # Ratio per round (to that round's plain forward), then the median: robust to the machine drifting.
    plain = times["plain forward"]
    rows = [{"case": name, "median_s": statistics.median(t),
             "ratio": statistics.median([a / b for a, b in zip(t, plain)]),
             "min_s": min(t), "max_s": max(t)} for name, t in times.items()]
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpu_count": torch.get_num_threads(), "torch": torch.__version__,
            "shape": f"batch {args.batch} x {args.seq} tokens, {config.num_hidden_layers} layers, "
                     f"hidden {config.hidden_size}, fp32, {args.threads} threads", "rounds": args.rounds}
    print(f"# {meta['shape']}; {args.rounds} rounds, medians; {meta['date']}")
    print("| case | median (ms) | ratio to plain forward (median of per-round ratios) |")
    print("| --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['case']} | {row['median_s'] * 1000:.1f} | {row['ratio']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
