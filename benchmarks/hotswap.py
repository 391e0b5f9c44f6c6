"""Hot-swapping a LoRA adapter on a compiled Llama-shaped model: adapterkit's `hotswap_adapter` beside peft's, in one
process, and what the add / remove alternative costs in a serving loop.

    python benchmarks/hotswap.py --out benchmarks/results/cpu-hotswap.json

Both libraries serve the same adapters (made once by adapterkit with random weights, saved in its format and in
PEFT's) on identical base models: LoRA on all seven linear projections, ranks 16, 8, 4 (padded to 16 by
`prepare_for_hotswap` / peft's `prepare_model_for_compiled_hotswap`) and different alphas. Each round swaps both
models to the next adapter (round-robin, the order alternating), timing the swap from the saved directory and from
a state dict already in memory, then runs the compiled forward and checks it against the eager model with that
adapter freshly loaded. The swaps run under `error_on_recompile`, and new graphs are counted with dynamo's counters.
The serving-loop alternative (load the next adapter, activate it, delete the last, run) is timed after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers as tf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import adapterkit  # noqa: E402

ALL_LINEAR = "attn_matrices=['q','k','v','o'],intermediate_lora=True,output_lora=True"
ADAPTERS = [(16, 32), (8, 8), (4, 16), (16, 8)]  # (r, alpha): other ranks <= 16, other alphas


def llama(args) -> torch.nn.Module:
    cfg = tf.LlamaConfig(hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                         max_position_embeddings=max(256, args.seq))
    torch.manual_seed(0)
    return tf.LlamaForCausalLM(cfg).eval().to(args.device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def make_adapters(args, root: Path) -> list[dict]:
    """Saved adapters, both formats: [{r, alpha, native, peft}]."""
    donor = adapterkit.init(llama(args))
    out = []
    g = torch.Generator().manual_seed(1)
    for i, (r, alpha) in enumerate(ADAPTERS):
        name = f"a{i}"
        donor.add_adapter(name, f"lora[r={r},alpha={alpha},{ALL_LINEAR}]")
        with torch.no_grad():
            for p in donor.adapterkit[name].parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        entry = {"r": r, "alpha": alpha}
        for fmt in ("adapterkit", "peft"):
            entry[fmt] = str(root / f"{name}-{fmt}")
            donor.save_adapter(entry[fmt], name, format=fmt)
        out.append(entry)
    return out


def references(args, adapters, batch) -> list[torch.Tensor]:
    """The eager logits of each adapter freshly loaded (the value every swap must reproduce)."""
    model = adapterkit.init(llama(args))
    out = []
    for entry in adapters:
        model.load_adapter(entry["adapterkit"], load_as="ref", set_active=True, overwrite_ok=True)
        with torch.no_grad():
            out.append(model(**batch).logits.clone())
    return out


class Adapterkit:
    name = "adapterkit"
    served = "srv"

    def __init__(self, args, adapters):
        self.model = adapterkit.init(llama(args))
        self.model.load_adapter(adapters[0]["adapterkit"], load_as="srv", set_active=True)
        self.model.prepare_for_hotswap("srv", max_rank=max(r for r, _ in ADAPTERS))
        self.memory = []
        for entry in adapters:  # the same adapters as state dicts with their configs, already in memory
            ckpt = adapterkit.io.read_checkpoint(self.model, entry["adapterkit"])
            self.memory.append(({k: v.to(args.device) for k, v in ckpt.tensors.items()}, ckpt.config))

    def swap_disk(self, entry) -> None:
        self.model.hotswap_adapter("srv", entry["adapterkit"])

    def swap_memory(self, i) -> None:
        tensors, config = self.memory[i]
        self.model.hotswap_adapter("srv", tensors, config=config)

    def add_remove(self, entry, old: str, new: str) -> None:
        self.model.load_adapter(entry["adapterkit"], load_as=new, set_active=True)
        self.model.delete_adapter(old)


class Peft:
    name = "peft"
    served = "default"

    def __init__(self, args, adapters):
        from peft import PeftModel
        from peft.utils.hotswap import prepare_model_for_compiled_hotswap
        from peft.utils.save_and_load import _insert_adapter_name_into_state_dict, load_peft_weights
        from peft import LoraConfig
        self.device = args.device
        self.model = PeftModel.from_pretrained(llama(args), adapters[0]["peft"]).eval()
        prepare_model_for_compiled_hotswap(self.model, target_rank=max(r for r, _ in ADAPTERS),
                                           config=self.model.peft_config)
        self.memory = []
        for entry in adapters:
            state = load_peft_weights(entry["peft"], device=args.device)
            state = _insert_adapter_name_into_state_dict(state, adapter_name="default", parameter_prefix="lora_")
            self.memory.append((state, LoraConfig.from_pretrained(entry["peft"])))

    def swap_disk(self, entry) -> None:
        from peft.utils.hotswap import hotswap_adapter
        hotswap_adapter(self.model, entry["peft"], adapter_name="default", torch_device=self.device)

    def swap_memory(self, i) -> None:
        from peft.utils.hotswap import hotswap_adapter_from_state_dict
        state, config = self.memory[i]
        hotswap_adapter_from_state_dict(self.model, state, adapter_name="default", config=config)

    def add_remove(self, entry, old: str, new: str) -> None:
        self.model.load_adapter(entry["peft"], adapter_name=new)
        self.model.set_adapter(new)
        self.model.delete_adapter(old)


def progress(message: str) -> None:
    print(f"[hotswap {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stats(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1408)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--loop-rounds", type=int, default=3, help="serving-loop (add / remove) rounds")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--libraries", nargs="+", default=["adapterkit", "peft"])
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    # both libraries' models run LlamaForCausalLM.forward, and the serving loop compiles it again: room for all
    torch._dynamo.config.cache_size_limit = 64
    g = torch.Generator().manual_seed(2)
    batch = {"input_ids": torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).to(args.device)}
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(args, Path(tmp))
        expected = references(args, adapters, batch)
        libs = [{"adapterkit": Adapterkit, "peft": Peft}[n](args, adapters) for n in args.libraries]
        results = {lib.name: {"swap_disk": [], "swap_memory": [], "forward": [], "max_abs_diff": 0.0} for lib in libs}
        compiled = {}
        for lib in libs:
            before = graphs()
            compiled[lib.name] = torch.compile(lib.model, backend=args.backend)
            start = time.perf_counter()
            with torch.no_grad():
                compiled[lib.name](**batch)
            sync(args.device)
            results[lib.name]["compile_s"] = time.perf_counter() - start
            results[lib.name]["graphs_compiled"] = graphs() - before
            progress(f"{lib.name} compiled in {results[lib.name]['compile_s']:.1f} s")
        torch._dynamo.utils.counters["stats"]["unique_graphs"] = 0
        with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
            for round_ in range(args.rounds):
                i = (round_ + 1) % len(adapters)
                for lib in (libs if round_ % 2 == 0 else libs[::-1]):
                    r = results[lib.name]
                    for source in ("swap_memory", "swap_disk"):  # disk last: its adapter is the one checked
                        sync(args.device)
                        start = time.perf_counter()
                        lib.swap_disk(adapters[i]) if source == "swap_disk" else lib.swap_memory(i)
                        sync(args.device)
                        r[source].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    logits = compiled[lib.name](**batch).logits
                    sync(args.device)
                    r["forward"].append(time.perf_counter() - start)
                    r["max_abs_diff"] = max(r["max_abs_diff"], (logits.float() - expected[i].float()).abs().max().item())
        new_graphs = graphs()
        progress(f"{args.rounds} swap rounds done, {new_graphs} new graphs")
        for lib in libs:
            r = results[lib.name]
            r["new_graphs_during_swaps"] = new_graphs  # error_on_recompile would have raised on any
            for key in ("swap_disk", "swap_memory", "forward"):
                r[key] = stats(r[key])
        # the serving-loop alternative: load the next, activate it, delete the last; the forward compiles again
        for lib in libs:
            if args.loop_rounds <= 0:
                break
            torch._dynamo.utils.counters["stats"]["unique_graphs"] = 0
            add_remove, first = [], []
            for round_ in range(args.loop_rounds):
                entry = adapters[(round_ + 1) % len(adapters)]
                sync(args.device)
                start = time.perf_counter()
                new = f"loop{round_}"
                lib.add_remove(entry, lib.served, new)
                lib.served = new
                sync(args.device)
                add_remove.append(time.perf_counter() - start)
                start = time.perf_counter()
                with torch.no_grad():
                    compiled[lib.name](**batch)
                sync(args.device)
                first.append(time.perf_counter() - start)
                progress(f"{lib.name} add / remove round {round_}: {add_remove[-1] * 1000:.0f} ms + {first[-1]:.1f} s")
            results[lib.name]["add_remove"] = stats(add_remove)
            results[lib.name]["first_forward_after_add_remove"] = stats(first)
            results[lib.name]["new_graphs_in_loop"] = graphs()
    names = [lib.name for lib in libs]
    ratios = {}
    if len(names) == 2:
        a, b = results[names[0]], results[names[1]]
        ratios = {f"{key} {names[0]}/{names[1]}": a[key]["median_ms"] / b[key]["median_ms"]
                  for key in ("swap_disk", "swap_memory", "forward")}
    report = {
        "benchmark": "hotswap", "started": started, "argv": sys.argv[1:], "args": vars(args),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "cuda": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "versions": {"torch": torch.__version__, "transformers": tf.__version__,
                     "peft": __import__("peft").__version__ if "peft" in names else None},
        "adapters": [{"r": e["r"], "alpha": e["alpha"]} for e in adapters],
        "results": results, "ratios": ratios,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
