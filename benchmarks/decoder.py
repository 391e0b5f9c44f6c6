"""Decoder speed on a Llama-shaped model (8 layers, 512 hidden, GQA 8/4 heads, 1408 FFN, 8k vocab), adapterkit
beside peft in one process, every case timed round-robin (timing.py): medians, and medians of per-round ratios.

Parts:
- `generate`: one `generate()` of `--rows` prompts whose rows use 1, 8 or 64 different LoRA adapters
  (`adapter_names=[...]`, peft's mixed-batch inference too) against the same batch on one adapter; and the same
  rows run adapter by adapter (one `generate()` per adapter on its rows), as tokens/s.
- `forward`: one decoding-shaped forward (rows x 1 token, no cache) with 1, 8 or 64 adapters routed: the
  routed projections without generate()'s own costs.
- `train`: the floor (frozen model, backward through every layer from the embeddings' output, no adapter, no
  optimizer), then LoRA and DoRA r=16 train steps (forward, backward, AdamW) on all seven linear projections of
  every layer, as ratios to the floor.

    python benchmarks/decoder.py [--parts generate train] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--compile] [--rows 64] [--rounds 5] [--tiny] [--out bench-out/decoder]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from timing import round_robin, summarise
from common import Case

TARGETS = "['q','k','v','o'],intermediate_lora=True,output_lora=True"  # with selfattn: all seven projections


def llama_config(tiny: bool) -> LlamaConfig:
    if tiny:
        return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=99, pad_token_id=0)
    return LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=4, vocab_size=8192, max_position_embeddings=1024, pad_token_id=0)


def make_model(args) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(args.tiny)).to(args.device, getattr(torch, args.dtype))
    model.generation_config.update(eos_token_id=None, bos_token_id=None, pad_token_id=0, do_sample=False)
    return model


def ours(args, names, rank, dora=False):
    import adapterkit
    model = adapterkit.init(make_model(args))
    method = "dora" if dora else "lora"
    for name in names:
        model.add_adapter(name, config=f"{method}[r={rank},alpha={2 * rank},attn_matrices={TARGETS}]")
        _randomise(model.adapterkit[name])
    model.adapterkit.to(torch.float32)  # float32 adapters on a 16-bit base, as peft keeps them
    model.to(args.device)
    model.set_active_adapters(names[0])
    return model


def theirs(args, names, rank, dora=False):
    from peft import LoraConfig, get_peft_model
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                        use_dora=dora)
    model = get_peft_model(make_model(args), config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    for name, p in model.named_parameters():
        if "lora_" in name:
            with torch.no_grad():
                p.normal_(0, 0.02)
    model.set_adapter(names[0])
    return model


def _randomise(module) -> None:
    """B = 0 at init makes every adapter the plain model; random factors make rows really differ."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02)


def compiled(model, args):
    return torch.compile(model, mode=args.mode) if args.compile else model


def generate_cases(args) -> tuple[dict, dict]:
    rows, counts = args.rows, sorted(set(args.adapters))
    g = torch.Generator().manual_seed(0)
    vocab = llama_config(args.tiny).vocab_size
    ids = torch.randint(1, vocab, (rows, args.prompt), generator=g).to(args.device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "max_new_tokens": args.new, "min_new_tokens": args.new, "do_sample": False}
    most = max(counts)
    names = [f"a{i}" for i in range(most)]
    libraries = [("adapterkit", ours)] + ([("peft", theirs)] if args.peft else [])
    cases, tokens = {}, {}

    def gen(model, **kwargs):
        def step():
            with torch.inference_mode():
                model.generate(**batch, **kwargs)
        return Case(step, model.eval)

    for library, build in libraries:
        model = build(args, names, args.rank)
        cases[f"{library}, one adapter"] = gen(model)
        for n in counts:
            if n > 1:
                per_row = [names[i % n] for i in range(rows)]  # interleaved: neighbours differ
                cases[f"{library}, {n} adapters in one generate()"] = gen(model, adapter_names=per_row)
                tokens[f"{library}, {n} adapters in one generate()"] = rows * args.new
                if library == "adapterkit" and args.previous:
                    key = f"adapterkit (previous gather path), {n} adapters in one generate()"
                    cases[key] = _with_previous_path(gen(model, adapter_names=per_row))
                    tokens[key] = rows * args.new
        if library == "adapterkit":
            for n in counts:
                if n > 1:
                    cases[f"adapterkit, {n} adapters, one generate() per adapter"] = _one_by_one(model, batch, names[:n])
                    tokens[f"adapterkit, {n} adapters, one generate() per adapter"] = rows * args.new
    return cases, tokens


def previous_path(plan, segment_groups, modules, x, out):
    """The routed LoRA path before segmented.py (for an A/B in one process): every forward restacks all the
    adapters' factors, then gathers each row's A and B and runs two bmm's."""
    factors = [m.routed_factors() for m in modules]
    rank = max(a.shape[0] for a, _ in factors)
    a = torch.stack([torch.nn.functional.pad(a, (0, 0, 0, rank - a.shape[0])) for a, _ in factors])
    b = torch.stack([torch.nn.functional.pad(b, (0, rank - b.shape[1])) for _, b in factors])
    a = torch.cat([a.new_zeros(1, *a.shape[1:]), a]).to(x.dtype)
    b = torch.cat([b.new_zeros(1, *b.shape[1:]), b]).to(x.dtype)
    slots = [0] * len(plan.groups)
    for i, group in enumerate(segment_groups):
        slots[group] = i + 1
    slots = plan.rows_of(tuple(slots))
    rows = out.shape[0]
    x3 = x.reshape(rows, -1, x.shape[-1])
    return out + torch.bmm(torch.bmm(x3, a[slots].transpose(1, 2)), b[slots].transpose(1, 2)).view(out.shape)


def _with_previous_path(case: Case) -> Case:
    from adapterkit.compose import segmented

    def step():
        saved = segmented.apply

        segmented.apply = previous_path
        try:
            case.step()
        finally:
            segmented.apply = saved
    return Case(step, case.prepare)


def forward_cases(args) -> dict:
    """One decoding-shaped forward (`--rows` rows x `--tokens` tokens, no cache): the routed projections alone."""
    names = [f"a{i}" for i in range(max(args.adapters))]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, llama_config(args.tiny).vocab_size, (args.rows, args.tokens), generator=g).to(args.device)
    model = ours(args, names, args.rank)

    def fwd(**kwargs):
        def step():
            with torch.inference_mode():
                model(input_ids=ids, **kwargs)
        return Case(step, model.eval)
    cases = {"adapterkit, one adapter": fwd()}
    for n in sorted(set(args.adapters)):
        per_row = [names[i % n] for i in range(args.rows)]
        cases[f"adapterkit, {n} adapters"] = fwd(adapter_names=per_row)
        if args.previous:
            cases[f"adapterkit (previous gather path), {n} adapters"] = _with_previous_path(fwd(adapter_names=per_row))
    return cases


def _one_by_one(model, batch, names) -> Case:
    n = len(names)
    ids = batch["input_ids"]
    options = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}

    def step():
        with torch.inference_mode():
            for i, name in enumerate(names):
                rows = ids[i::n]  # the rows routed to adapter i in the batched case
                model.set_active_adapters(name)
                model.generate(input_ids=rows, attention_mask=torch.ones_like(rows), **options)
        model.set_active_adapters(names[0])
    return Case(step, model.eval)


def train_cases(args) -> dict:
    g = torch.Generator().manual_seed(1)
    vocab = llama_config(args.tiny).vocab_size
    ids = torch.randint(1, vocab, (args.batch, args.seq), generator=g).to(args.device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    floor_model = make_model(args)
    floor_model.requires_grad_(False)
    # the embeddings' output as a leaf that wants a gradient: backward runs through every layer, no weight gets
    # one (a forward hook doing requires_grad_ would be the same in eager mode, but not under torch.compile)
    with torch.no_grad():
        embeds = floor_model.model.embed_tokens(ids)
    floor_fn = compiled(floor_model, args)

    def floor():
        leaf = embeds.detach().requires_grad_(True)
        floor_fn(inputs_embeds=leaf, attention_mask=batch["attention_mask"], labels=ids).loss.backward()
    cases = {"floor": Case(floor, floor_model.train)}
    libraries = [("adapterkit", ours)] + ([("peft", theirs)] if args.peft else [])
    for label, dora in (("LoRA", False), ("DoRA", True)):
        if label not in args.methods:
            continue
        for library, build in libraries:
            model = build(args, ["t"], 16, dora=dora)
            if library == "adapterkit":
                model.train_adapter("t")
            cases[f"{library}, {label} r=16 all-linear train step"] = _train(model, batch, args)
    return cases


def _train(model, batch, args) -> Case:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    fn = compiled(model, args)

    def step():
        fn(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return Case(step, model.train)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["generate", "train"], choices=["generate", "train", "forward"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the base model's dtype (adapters stay float32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the train steps (--mode)")
    parser.add_argument("--mode", default="default")
    parser.add_argument("--rows", type=int, default=64, help="generate: rows of the batch")
    parser.add_argument("--prompt", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1, help="forward: tokens per row")
    parser.add_argument("--new", type=int, default=8, help="generate: new tokens per row")
    parser.add_argument("--adapters", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--rank", type=int, default=16, help="generate: the LoRA adapters' rank")
    parser.add_argument("--methods", nargs="+", default=["LoRA", "DoRA"], choices=["LoRA", "DoRA"],
                        help="train: the methods")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="a 32-wide model (checks the script)")
    parser.add_argument("--no-peft", dest="peft", action="store_false")
    parser.add_argument("--previous", action="store_true",
                        help="generate: also the routed LoRA path before segmented.py (an A/B in one process)")
    parser.add_argument("--out", default="bench-out/decoder")
    args = parser.parse_args(argv)
    if args.peft:
        try:
            import peft  # noqa: F401
        except ImportError:
            args.peft = False
    torch.set_num_threads(args.threads)
    if args.compile and "generate" in args.parts:
        print("note: --compile applies to the train steps; generate() runs eagerly")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"{platform.machine()} CPU, {args.threads} threads"
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report, lines = {"meta": {"started": started, "device": where, "dtype": args.dtype, "compile": args.compile,
                              "torch": torch.__version__, "args": vars(args)}}, []
    if "generate" in args.parts:
        cases, tokens = generate_cases(args)
        times = round_robin(cases, args.rounds, args.warmup, args.device, alternate=True)
        summary = summarise(times, "adapterkit, one adapter")
        for library in ("adapterkit", "peft"):  # peft's ratios to its own one-adapter batch
            key = f"{library}, one adapter"
            if key in times:
                for name in times:
                    if name.startswith(library) and not name.endswith("per adapter"):
                        summary[name]["ratio_own"] = summarise({key: times[key], name: times[name]}, key)[name]["ratio"]
        for name, n in tokens.items():
            summary[name]["tokens_per_s"] = n / summary[name]["median_s"]
        report["generate"] = summary
        lines += [f"generate: {args.rows} rows x {args.prompt} prompt tokens, {args.new} new tokens (greedy, KV cache), "
                  f"LoRA r={args.rank} on all seven projections; {args.rounds} rounds",
                  "| case | median (ms) | × its library's one adapter | tokens/s |", "| --- | ---: | ---: | ---: |"]
        for name, row in summary.items():
            lines.append(f"| {name} | {row['median_s'] * 1e3:.0f} | {row.get('ratio_own', float('nan')):.3f} | "
                         f"{row.get('tokens_per_s', args.rows * args.new / row['median_s']):.0f} |")
    if "forward" in args.parts:
        times = round_robin(forward_cases(args), args.rounds, args.warmup, args.device, alternate=True)
        summary = summarise(times, "adapterkit, one adapter")
        report["forward"] = summary
        lines += [f"forward: {args.rows} rows x {args.tokens} tokens, LoRA r={args.rank} on all seven projections, "
                  f"inference; {args.rounds} rounds", "| case | median (ms) | × one adapter |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {row['median_s'] * 1e3:.1f} | {row['ratio']:.3f} |" for name, row in summary.items()]
    if "train" in args.parts:
        times = round_robin(train_cases(args), args.rounds, args.warmup, args.device, alternate=True)
        summary = summarise(times, "floor")
        report["train"] = summary
        lines += [f"train: batch {args.batch} x {args.seq}, {args.dtype}{', compiled' if args.compile else ''}; "
                  f"{args.rounds} rounds", "| case | median (ms) | × floor |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {row['median_s'] * 1e3:.0f} | {row['ratio']:.3f} |" for name, row in summary.items()]
    report["meta"]["finished"] = datetime.now(timezone.utc).strftime("%H:%M UTC")
    text = f"# {where}, {args.dtype}, torch {torch.__version__}; {started} to {report['meta']['finished']}\n" + \
        "\n".join(lines) + "\n"
    print(text)
    (out / "decoder.md").write_text(text)
    (out / "decoder.json").write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"({time.time() - t0:.0f} s)")
