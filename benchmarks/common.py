"""What every benchmark process shares: the model shape, the batch, the case names and the step functions.

This module imports only torch and transformers (no adapter library), so the same file runs in the main venv
(transformers 5.x: adapterkit, peft) and in the reference venv (transformers 4.57: `adapters`).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple, Optional

import torch
from transformers import BertConfig, BertModel

# (key, label, kind). kind: "infer" (eval, inference mode), "train" (a full optimizer step: forward, backward,
# AdamW step), "floor" (backward without an optimizer), "op" (a one-off operation such as adding an adapter).
CASES = [
    ("plain_forward", "plain forward (baseline of the ratios)", "infer"),
    ("floor", "floor: frozen model, backward through every layer, no adapter", "floor"),
    ("full_ft", "full fine-tune step", "train"),
    ("lora_train", "LoRA r=8 train step", "train"),
    ("lora_infer", "LoRA r=8 inference, unmerged", "infer"),
    ("lora_merged", "LoRA r=8 inference, merged", "infer"),
    ("pfeiffer_train", "Pfeiffer (seq_bn) train step", "train"),
    ("pfeiffer_infer", "Pfeiffer (seq_bn) inference", "infer"),
    ("prefix_train", "prefix tuning (30) train step", "train"),
    ("prefix_infer", "prefix tuning (30) inference", "infer"),
    ("ia3_train", "(IA)^3 train step", "train"),
    ("unipelt_train", "UniPELT train step", "train"),
    ("loha_train", "LoHa r=8 train step", "train"),
    ("loha_infer", "LoHa r=8 inference, unmerged", "infer"),
    ("dora_train", "DoRA r=8 train step", "train"),
    ("dora_infer", "DoRA r=8 inference, unmerged", "infer"),
    ("vera_train", "VeRA r=8 train step", "train"),
    ("vera_infer", "VeRA r=8 inference, unmerged", "infer"),
    ("prompt_train", "prompt tuning (10) train step", "train"),
    ("prompt_infer", "prompt tuning (10) inference", "infer"),
    ("add_lora", "add a LoRA r=8 adapter", "op"),
    ("merge_lora", "merge a LoRA r=8 adapter", "op"),
]
LABELS = {key: label for key, label, _ in CASES}
KINDS = {key: kind for key, _, kind in CASES}
BASE_KEYS = ("plain_forward", "floor", "full_ft")  # no adapter library involved
TRAIN_KEYS = [key for key, _, kind in CASES if kind == "train"]
SCALING_SEQ = (64, 128, 256, 512)
SCALING_LAYERS = (6, 12, 24)
# AdamW's `foreach` in every train case: None is torch's own choice (foreach on CUDA, a loop over the parameters on
# the CPU); the operation count (opcount.py) sets True, to count what a CUDA run dispatches.
ADAMW_FOREACH: Optional[bool] = None


@dataclass
class Shape:
    """The benchmark's model and batch. Defaults: bert-base, batch 8 x 128 tokens, fp32, 2 threads."""

    batch: int = 8
    seq: int = 128
    layers: int = 12
    threads: int = 2
    device: str = "cpu"
    tiny: bool = False
    dtype: str = "float32"  # the base model's; adapters stay float32 (peft's default), see cases_hub

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "Shape":
        return Shape(**{**asdict(self), **changes})


class Case(NamedTuple):
    """`step` is timed; `prepare` (if any) runs untimed right before it (e.g. delete the adapter `step` adds)."""

    step: Callable[[], None]
    prepare: Optional[Callable[[], None]] = None


def add_shape_arguments(parser) -> None:
    """--device, --threads, --batch, --seq, --layers, --tiny: the Shape of a single-process script."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--tiny", action="store_true", help="a 32-wide model (checks the script; numbers mean nothing)")
    add_dtype_argument(parser)


def add_dtype_argument(parser) -> None:
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="the base model's dtype (adapters stay float32, as peft keeps them by default)")


def shape_from_arguments(args) -> Shape:
    return Shape(batch=args.batch, seq=args.seq, layers=args.layers, threads=args.threads, device=args.device,
                 tiny=args.tiny, dtype=args.dtype)


def bert_config(shape: Shape) -> BertConfig:
    if shape.tiny:
        return BertConfig(hidden_size=32, num_hidden_layers=shape.layers, num_attention_heads=4,
                          intermediate_size=64, vocab_size=99, max_position_embeddings=max(512, shape.seq))
    # bert-base: 768 hidden, 12 heads, 3072 FFN, 30522 vocab
    return BertConfig(num_hidden_layers=shape.layers, max_position_embeddings=max(512, shape.seq))


def make_model(shape: Shape) -> BertModel:
    """A freshly initialised bert-base-shaped model (same seed, so every process gets the same weights)."""
    torch.manual_seed(0)
    return BertModel(bert_config(shape), add_pooling_layer=False).to(shape.device, getattr(torch, shape.dtype))


def make_batch(shape: Shape) -> dict:
    g = torch.Generator().manual_seed(0)
    vocab = bert_config(shape).vocab_size
    return {"input_ids": torch.randint(0, vocab, (shape.batch, shape.seq), generator=g).to(shape.device),
            "attention_mask": torch.ones(shape.batch, shape.seq, dtype=torch.long, device=shape.device)}


def setup_process(shape: Shape) -> None:
    torch.set_num_threads(shape.threads)


def trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def train_case(model, batch, params=None) -> Case:
    """One optimizer step (train mode: dropout on) on a squared-output loss. The mode is set untimed before each
    call (`prepare`): a training loop sets it once, not per step, and its cost grows with the module count."""
    optimizer = torch.optim.AdamW(trainable(model) if params is None else params, lr=1e-4, foreach=ADAMW_FOREACH)

    def step():
        out = model(**batch).last_hidden_state
        out.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return Case(step, model.train)


def inference_case(model, batch) -> Case:
    def step():
        with torch.inference_mode():
            model(**batch)
    return Case(step, model.eval)


def base_cases(shape: Shape, batch) -> dict[str, Case]:
    """Cases that involve no adapter library: the baseline of the ratios, the floor, full fine-tuning."""
    return {key: base_case(key, shape, batch) for key in BASE_KEYS}


def base_case(key: str, shape: Shape, batch) -> Case:
    model = make_model(shape)
    if key == "plain_forward":
        return inference_case(model, batch)
    if key == "full_ft":
        return train_case(model, batch, list(model.parameters()))
    if key == "floor":
        # The floor of any exact frozen-base method: the model's own train-mode forward and a backward through
        # every layer (gradients flow from the embeddings' output upwards), with no adapter and no optimizer.
        model.requires_grad_(False)
        model.embeddings.register_forward_hook(lambda module, args, out: out.requires_grad_(True))

        def step():
            model(**batch).last_hidden_state.float().pow(2).mean().backward()
        return Case(step, model.train)
    raise KeyError(key)


@contextlib.contextmanager
def fused_lora_disabled(disabled: bool):
    """adapterkit's LoRA on its hook path while inside (as `run_all.py --no-fused-lora`)."""
    if not disabled:
        yield
        return
    import adapterkit.methods.lora.fused as fused
    saved = fused.fused_args
    fused.fused_args = lambda *a: None
    try:
        yield
    finally:
        fused.fused_args = saved
