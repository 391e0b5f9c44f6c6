"""AdapterTrainer steps of LoRA, seq_bn and prefix tuning on a tiny BERT and a tiny Llama, the same global batches
whatever the process count.

Run by tests/test_fsdp.py under `accelerate launch` with its FSDP plugin (fsdp_version 2, gloo on the CPU). Batches
in order (sequential sampling), SGD and gradient clipping as in fsdp_steps.py, so the result must equal its
one-process plain loop. Per arch and method, every rank writes its outputs and the gathered
adapter + head weights (`fsdp_steps.rank_record`) to OUT/rank<r>/<arch>_<method>.safetensors; the Trainer saves an adapter checkpoint after the last step
(OUT/<arch>_<method>/run/checkpoint-3), which a fresh Trainer resumes from and rank 0 writes `save_adapter` output to OUT/saved/<arch>_<method>.

usage: fsdp_trainer_steps.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

sys.path.insert(0, str(Path(__file__).parent))
import fsdp_steps  # noqa: E402
from fsdp_steps import GLOBAL_BATCH, LR, MAX_GRAD_NORM, MOMENTUM, STEPS, build  # noqa: E402
from adapterkit import AdapterTrainer, distributed  # noqa: E402


def fsdp_on_cpu(model) -> bool:
    """Give accelerate's state the FSDP plugin `accelerate launch` configured (its FSDP_* environment), for `model`.

    - accelerate 1.16 turns its FSDP plugin on only for accelerator devices: on a CPU-only machine its state stays
      MULTI_CPU (DDP) and drops the plugin. This machine has no GPU, so the plugin goes into the shared state by
      hand, the only departure from a GPU run: what follows (accelerate's fsdp2_prepare_model, the Trainer's FSDP
      branches, our save path) is the code a GPU run executes.
    - A plugin fixes its wrap policy on the first model it prepares, and this process trains several architectures:
      a fresh plugin per model, wrapping that model's transformer layer class (a launch config's
      `fsdp_transformer_layer_cls_to_wrap`). Left to `_no_split_modules`, accelerate also wraps BertEmbeddings and
      then fails to shard its word embeddings on their own (their weights are DTensors already)."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    state = Accelerator(cpu=True).state  # shared by every Accelerator (the Trainer's) in this process
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = PartialState().distributed_type = DistributedType.FSDP  # each re-reads the other
    layer = type(model.adapter_state.layers[0]).__name__
    state.fsdp_plugin = FullyShardedDataParallelPlugin(transformer_cls_names_to_wrap=[layer])
    return True


def trainer(arch: str, method: str, out: Path, world: int = 1) -> AdapterTrainer:
    rows, labels = fsdp_steps.data()
    data = [{"input_ids": row, "labels": int(label)} for row, label in zip(rows, labels)]
    model = build(arch, method)
    configured = fsdp_on_cpu(model)
    args = TrainingArguments(str(out / f"{arch}_{method}" / "run"), max_steps=STEPS,
                             per_device_train_batch_size=GLOBAL_BATCH // world, optim="sgd",
                             optim_args=f"momentum={MOMENTUM}", learning_rate=LR,
                             lr_scheduler_type="constant", max_grad_norm=MAX_GRAD_NORM,
                             train_sampling_strategy="sequential", save_strategy="steps", save_steps=STEPS,
                             report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                             ddp_backend="gloo" if world > 1 else None,
                             accelerator_config={"use_configured_state": configured})
    return AdapterTrainer(model=model, args=args, train_dataset=data)


def resume(arch: str, method: str, out: Path, world: int, trained: dict) -> float:
    """A fresh Trainer resumed from the last checkpoint (no steps left to run): the adapter checkpoint loads into
    the sharded model and the optimizer state through accelerate; returns the largest difference to `trained`."""
    t = trainer(arch, method, out, world)
    t.train(resume_from_checkpoint=str(out / f"{arch}_{method}" / "run" / f"checkpoint-{STEPS}"))
    model = t.accelerator.unwrap_model(t.model)
    assert distributed.is_sharded(model)
    with distributed.gathered_adapters(model, rank0_only=False):
        back = fsdp_steps.weights(model)
    return max((back[k] - trained[k]).abs().max().item() for k in back)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    (out / f"rank{rank}").mkdir(parents=True, exist_ok=True)
    for arch in fsdp_steps.ARCHS:
        for method in fsdp_steps.METHODS:
            t = trainer(arch, method, out, world)
            t.train()
            model = t.accelerator.unwrap_model(t.model)
            assert distributed.is_sharded(model), "accelerate did not shard the model (FSDP plugin not in use?)"
            tensors, meta = fsdp_steps.rank_record(model)
            if method == "prefix":  # one resume per architecture: each Trainer costs seconds
                meta["resume_diff"] = str(resume(arch, method, out, world, tensors))
            save_file(tensors, str(out / f"rank{rank}" / f"{arch}_{method}.safetensors"), metadata=meta)
            distributed.save_adapter(model, out / "saved" / f"{arch}_{method}", "task")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
