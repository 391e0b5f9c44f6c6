"""One configuration of the memory benchmark (memory.py) in this fresh process: load the base, add LoRA with one
library, run a few training steps; print peak RSS and step times as JSON.

Why a process per configuration: a process's peak RSS never goes down, and allocator caches and the quantized
load's transient copies of one configuration must not count against the next. The training-phase peak is read as
VmHWM after resetting it (`/proc/self/clear_refs` "5") once the model, adapter and optimizer are set up, so the
load's own peak (which can exceed training's for quantized loads) is reported apart.

    python benchmarks/memory_worker.py --library adapterkit --base nf4 --gc --model-dir DIR --shape '{...}'
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import statistics
import time

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BASES = ("fp32", "bf16", "int8", "nf4")
GC_KWARGS = {"use_reentrant": False}  # the same on both sides; no input-embedding hook needed


def status_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def release_freed() -> None:
    """Hand memory freed so far back to the OS (glibc keeps it otherwise): the quantized load leaves a varying
    amount of freed float weights in the allocator, which would move the training peak by ~100 MiB between two
    processes of the same configuration."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def to_anonymous_memory(model) -> None:
    """Copy the float weights that are views of the mmap'ed checkpoint into process memory: file-backed pages
    enter and leave RSS with the machine's memory pressure (a noisy peak on a shared machine). Quantized
    parameters (bitsandbytes' subclasses) are already copies."""
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if type(param) is torch.nn.Parameter:
                param.data = param.data.clone()


def load_base(base: str, model_dir: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    if base == "fp32":
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if base == "bf16":
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    if base == "int8":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_compute_dtype=torch.float32)
    # the non-quantized rest (embeddings, norms, head) float32, which prepare_model_for_kbit_training casts to anyway
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, quantization_config=quant,
                                                device_map="cpu")


def add_lora(library: str, model, base: str, gc: bool, r: int, alpha: float):
    kbit = base in ("int8", "nf4")
    if library == "adapterkit":
        import adapterkit
        from adapterkit import LoRAConfig
        if kbit:
            adapterkit.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                                       gradient_checkpointing_kwargs=GC_KWARGS)
        elif gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=GC_KWARGS)
        adapterkit.init(model)
        model.add_adapter("a", LoRAConfig(r=r, alpha=alpha, dropout=0.0, attn_matrices=["q", "k", "v", "o"],
                                          intermediate_lora=True, output_lora=True))
        if base == "bf16":  # float32 adapters on the bf16 base, as peft's autocast_adapter_dtype does by default
            model.adapter_to("a", dtype=torch.float32)
        model.train_adapter("a")
        for name, p in model.named_parameters():  # the LM head: frozen on both sides (peft's CAUSAL_LM does)
            if p.requires_grad and "lora" not in name.lower():
                p.requires_grad_(False)
        return model
    if library == "peft":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        if kbit:
            prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                            gradient_checkpointing_kwargs=GC_KWARGS)
        elif gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=GC_KWARGS)
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)  # adapters float32 on a bf16 base (autocast_adapter_dtype=True)
        model.train()
        return model
    raise ValueError(f"unknown library {library!r}; known: adapterkit, peft")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", required=True, choices=("adapterkit", "peft"))
    parser.add_argument("--base", required=True, choices=BASES)
    parser.add_argument("--gc", action="store_true", help="gradient checkpointing")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--anon-weights", action="store_true",
                        help="copy mmap-backed weights into process memory after the load (to_anonymous_memory)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import transformers
    rss_start = status_kb("VmRSS")
    t0 = time.perf_counter()
    model = load_base(args.base, args.model_dir)
    if args.anon_weights:
        to_anonymous_memory(model)
    load_s = time.perf_counter() - t0
    release_freed()
    rss_loaded, peak_load = status_kb("VmRSS"), status_kb("VmHWM")
    model = add_lora(args.library, model, args.base, args.gc, args.r, args.alpha)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    model.train()
    release_freed()
    rss_setup = status_kb("VmRSS")
    peak_before_steps = status_kb("VmHWM")
    reset = reset_peak()

    times, losses = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        losses.append(loss.detach().item())
    peak_train = status_kb("VmHWM")
    timed = times[1:] if len(times) > 1 else times
    result = {
        "library": args.library, "base": args.base, "gc": args.gc, "anon_weights": args.anon_weights,
        "batch": args.batch, "seq": args.seq, "steps": args.steps, "threads": args.threads,
        "trainable_params": sum(p.numel() for p in params),
        "trainable_dtypes": sorted({str(p.dtype) for p in params}),
        "load_s": load_s, "step_s": times, "median_step_s": statistics.median(timed),
        "losses": losses,
        "rss_start_mb": rss_start / 1024, "rss_loaded_mb": rss_loaded / 1024, "rss_setup_mb": rss_setup / 1024,
        "peak_load_mb": max(peak_load, peak_before_steps) / 1024,
        "peak_train_mb": peak_train / 1024 if reset else None,
        "peak_over_setup_mb": (peak_train - rss_setup) / 1024 if reset else None,
        "peak_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loadavg_after": open("/proc/loadavg").read().split()[:3],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     args.library: __import__(args.library).__version__},
    }
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
