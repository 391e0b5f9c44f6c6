#!/usr/bin/env python
"""adapterkit on a CUDA device gives what it gives on the CPU: every method on every architecture, composition,
merging, generation, training and checkpoints. Run on a machine with a GPU (tests never need one):

    PYTHONPATH=src python tools/cuda_check.py --out cuda-check.json        # exit 1 if any check fails

Each check builds a tiny model (tests/archs.py) with randomised adapters on the CPU, copies it to the device and
compares: outputs (and padded rows), the gradients of every adapter parameter, merged vs unmerged outputs, greedy
generation (KV cache), a few AdamW steps, and a checkpoint saved from the device and loaded on the CPU. Tolerances
are float32 ones (TF32 off); each result records its largest difference.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

import adapterkit  # noqa: E402
import archs  # noqa: E402
from adapterkit import composition as ac  # noqa: E402
from adapterkit.errors import AdapterError  # noqa: E402

METHODS = ["seq_bn", "par_bn", "double_seq_bn_inv", "lora", "ia3", "ia3[intermediate_lora=False,output_lora=True,"
           "scale_inputs=['output']]", "prefix_tuning", "prefix_tuning_flat", "compacter[reduction_factor=4]",
           "compacter++[reduction_factor=4]", "mam", "unipelt", "seq_bn[use_gating=True]", "lora[use_gating=True]"]
ARCHS = ["bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "vit", "gpt2", "llama", "bart", "t5"]
TOL = 1e-4


def to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def output(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float().cpu() - b.detach().float().cpu()).abs().max().item()


def pair(arch: str, config: str, device: str, cls=None):
    """The same randomised model on the CPU and on `device`."""
    cpu = archs.randomised(arch, {"a": config}, cls=cls)
    cpu.train_adapter("a")
    return cpu, copy.deepcopy(cpu).to(device)


def check_method(arch: str, config: str, device: str) -> dict:
    """Forward (eval) and the adapter gradients of a backward pass (train mode, dropout-free tiny configs)."""
    cpu, dev = pair(arch, config, device)
    batch = archs.inputs(arch)
    result = {}
    for model, where in ((cpu, "cpu"), (dev, device)):
        model.eval()
        with torch.no_grad():
            result[f"out_{where}"] = output(model(**to(batch, model.device)))
        model.train()
        output(model(**to(batch, model.device))).float().pow(2).mean().backward()
        result[f"grad_{where}"] = {n: p.grad for n, p in model.adapterkit.named_parameters() if p.requires_grad}
    grads = result["grad_cpu"]
    missing = [n for n, g in grads.items() if g is None or result[f"grad_{device}"][n] is None]
    return {"out": diff(result["out_cpu"], result[f"out_{device}"]),
            "grad": max((diff(g, result[f"grad_{device}"][n]) / max(1.0, g.abs().max().item())
                         for n, g in grads.items() if n not in missing), default=0.0),
            "params_without_grad": missing}


def check_merge(arch: str, config: str, device: str) -> dict:
    _, dev = pair(arch, config, device)
    dev.eval()
    batch = to(archs.inputs(arch), device)
    dev.set_active_adapters("a")
    with torch.no_grad():
        before = output(dev(**batch))
        dev.merge_adapter("a")
        merged = output(dev(**batch))
        dev.reset_adapter("a")
        reset = output(dev(**batch))
    return {"out": max(diff(before, merged), diff(before, reset))}


def check_generate(arch: str, config: str, device: str) -> dict:
    import transformers as tf
    auto = tf.AutoModelForSeq2SeqLM if arch in archs.SEQ2SEQ else tf.AutoModelForCausalLM
    cpu, dev = pair(arch, config, device, cls=auto._model_mapping[type(archs.config(arch))])
    ids = archs.inputs(arch, batch=2)["input_ids"]
    outs = []
    for model in (cpu, dev):
        model.eval()
        outs.append(model.generate(input_ids=ids.to(model.device), max_new_tokens=6, do_sample=False,
                                   pad_token_id=0).cpu())
    return {"out": float((outs[0] != outs[1]).sum().item())}  # differing tokens


def check_composition(device: str, arch: str = "bert") -> dict:
    """Stack, Parallel, BatchSplit, Average, Fuse and per-example routing on the device vs the CPU (GPT-2: the
    bottleneck blocks run at sublayer hooks, where the layer adds the residual itself)."""
    cpu = archs.randomised(arch, {"a": "seq_bn", "b": "seq_bn", "l1": "lora", "l2": "lora"})
    cpu.add_adapter_fusion(["a", "b"])
    with torch.no_grad():  # the fusion layers start as an identity-like mix: move them too
        for p in cpu.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    dev = copy.deepcopy(cpu).to(device)
    batch = archs.inputs(arch, batch=4)
    setups = {"stack": ac.Stack("a", "b"), "parallel": ac.Parallel("a", "b"),
              "batchsplit": ac.BatchSplit("l1", "l2", batch_sizes=[1, 3]),
              "average": ac.Average("l1", "l2", weights=[0.3, 0.7]), "fuse": ac.Fuse("a", "b")}
    out = {}
    for key, setup in setups.items():
        values = []
        for model in (cpu, dev):
            model.set_active_adapters(setup)
            with torch.no_grad():
                values.append(output(model(**to(batch, model.device))))
        out[key] = diff(*values)
    values = []
    for model in (cpu, dev):
        model.set_active_adapters(None)
        with torch.no_grad():
            values.append(output(model(**to(batch, model.device), adapter_names=["l1", "l2", "l1", None])))
    out["adapter_names"] = diff(*values)
    return {"out": max(out.values()), "cases": out}


def check_training_and_checkpoint(device: str) -> dict:
    """Five AdamW steps on the device and on the CPU from the same start; then save on the device, load on the CPU."""
    from transformers import BertForSequenceClassification
    cpu = adapterkit.init(archs.model("bert", cls=BertForSequenceClassification))
    cpu.add_adapter("a", config="seq_bn|lora")
    cpu.train_adapter("a")
    cpu.classifier.requires_grad_(False)  # the plain HF head is not part of the adapter checkpoint
    dev = copy.deepcopy(cpu).to(device)
    batch, labels = archs.inputs("bert", batch=4), torch.tensor([0, 1, 1, 0])
    for model in (cpu, dev):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.eval()  # dropout off: the two runs must see the same function
        for _ in range(5):
            model(**to(batch, model.device), labels=labels.to(model.device)).loss.backward()
            opt.step()
            opt.zero_grad()
    trained = max(diff(p, dict(dev.named_parameters())[n]) for n, p in cpu.named_parameters() if p.requires_grad)
    with tempfile.TemporaryDirectory() as tmp:
        dev.save_adapter(tmp, "a")
        back = adapterkit.init(archs.model("bert", cls=BertForSequenceClassification))
        back.load_adapter(tmp, set_active=True)
        dev.set_active_adapters("a")
        with torch.no_grad():
            loaded = diff(output(back.eval()(**batch)), output(dev.eval()(**to(batch, device))))
    return {"out": max(trained, loaded), "trained_params": trained, "saved_on_device_loaded_on_cpu": loaded}


def run(name: str, fn, *args) -> dict:
    start = time.perf_counter()
    try:
        result = fn(*args)
        ok = result["out"] <= TOL and result.get("grad", 0.0) <= TOL and not result.get("params_without_grad")
        result.update(status="ok" if ok else "FAILED")
    except AdapterError as e:  # a combination the library refuses on purpose (e.g. prefix tuning on DeBERTa)
        result = {"status": "refused", "error": str(e)[:200]}
    except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
        result = {"status": "FAILED", "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
    result["seconds"] = round(time.perf_counter() - start, 2)
    print(f"{result['status']:8} {name}: " + ", ".join(f"{k}={v:.2e}" for k, v in result.items()
                                                      if isinstance(v, float) and k != "seconds"), flush=True)
    if result["status"] == "FAILED" and "error" in result:
        print(result.get("trace", result["error"]), flush=True)
    return {"check": name, **result}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = [run(f"{arch}/{method}", check_method, arch, method, args.device) for arch in ARCHS
               for method in METHODS]
    results += [run(f"{arch}/merge {method}", check_merge, arch, method, args.device) for arch in ("bert", "gpt2")
                for method in ("lora", "ia3")]
    results += [run(f"{arch}/generate {method}", check_generate, arch, method, args.device)
                for arch in ("gpt2", "llama", "bart", "t5") for method in ("lora", "seq_bn", "prefix_tuning")]
    results.append(run("bert/composition", check_composition, args.device))
    results.append(run("gpt2/composition", check_composition, args.device, "gpt2"))
    results.append(run("bert/training+checkpoint", check_training_and_checkpoint, args.device))
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "refused", "FAILED")}
    summary = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
               "torch": torch.__version__, "tolerance": TOL, "counts": counts, "results": results}
    print(json.dumps(counts))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main())
