"""Loading a language model for `--task causal-lm` / `--task seq2seq` and `generate`: the checkpoint's own
transformers LM class (AutoModelForCausalLM or AutoModelForSeq2SeqLM, so its trained LM head comes along) with
the adapter API on it, and the tokenizer train saved next to the adapter (else the checkpoint's)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UsageError

TASKS = ("causal-lm", "seq2seq")
QUANTIZE = ("4bit", "8bit")


def lm_task(args) -> str | None:
    """'causal-lm' / 'seq2seq' when --task names one, else None (a classification task)."""
    task = (getattr(args, "task", None) or "").lower().replace("_", "-")
    return {"causal-lm": "causal-lm", "causallm": "causal-lm", "clm": "causal-lm", "seq2seq": "seq2seq"}.get(task)


def _quantization(quantize: str):
    """transformers' BitsAndBytesConfig for --quantize (nf4 with float32 compute: adapters train in float32)."""
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError(f"--quantize {quantize} needs bitsandbytes: pip install 'adapterkit[quant]'")
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)


def load_lm_model(path: Path, task: str | None = None, quantize: str | None = None):
    """(model, task) with `task` inferred from the config when None; a mismatch is a UsageError. `quantize`
    ("4bit" / "8bit"): the base loaded through bitsandbytes and prepared for k-bit training (QLoRA)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    import adapterkit

    from .models import load_config
    config = load_config(path)
    found = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal-lm"
    if task is not None and task != found:
        what = "an encoder-decoder" if found == "seq2seq" else "a decoder-only"
        raise UsageError(f"--task {task}: {path} is {what} model ({config.model_type}); use --task {found}")
    cls = AutoModelForSeq2SeqLM if found == "seq2seq" else AutoModelForCausalLM
    if quantize is not None and not path.is_dir():
        raise UsageError(f"--quantize {quantize} loads a checkpoint's weights; {path} is a config only")
    extra = {"quantization_config": _quantization(quantize)} if quantize else {}
    try:
        model = cls.from_pretrained(path, local_files_only=True, **extra) if path.is_dir() else cls.from_config(config)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot load a {found} model from {path}: {str(exc).splitlines()[0]}") from None
    if quantize:
        adapterkit.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return adapterkit.init(model), found


def device():
    """The GPU when there is one (as the Trainer picks), else the CPU."""
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(path: Path, adapter_dir: Path | None = None):
    from transformers import AutoTokenizer
    saved = adapter_dir.parent / "tokenizer" if adapter_dir is not None else None
    source = saved if saved is not None and saved.is_dir() else path
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load a tokenizer from {source}: {str(exc).splitlines()[0]}") from None


def model_for_adapter(model: str | None, adapter_dir: Path) -> str | None:
    """--model, else the base model recorded by `train` in the run's metrics.json."""
    if model is not None:
        return model
    report = adapter_dir.parent / "metrics.json"
    try:
        recorded = json.loads(report.read_text()).get("model") if report.is_file() else None
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, str):
        raise UsageError(f"{adapter_dir}: give --model (the base checkpoint; no run metrics.json records it)")
    return recorded
