"""AdapterTrainer steps under DeepSpeed ZeRO-2 and ZeRO-3 (CPU, gloo), LoRA / seq_bn / prefix tuning on a tiny BERT
and a tiny Llama: the same steps as fsdp_steps.py's one-process plain loop (sequential batches, SGD, clipping).

Run by tests/test_deepspeed.py under `torchrun --nproc_per_node 2` with DS_ACCELERATOR=cpu. Per case (stage, arch,
method: CASES), the Trainer checkpoints after the last step (OUT/zero<stage>_<arch>_<method>/checkpoint-3) and
`trainer.save_model` writes OUT/zero<stage>_<arch>_<method>/saved; both are adapter-only.

usage: deepspeed_steps.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import fsdp_steps  # noqa: E402
from fsdp_steps import GLOBAL_BATCH, LR, MAX_GRAD_NORM, MOMENTUM, STEPS, build  # noqa: E402
from adapterkit import AdapterTrainer  # noqa: E402


# ZeRO-3 and prefix tuning: the prefix MLP reads its embedding's weight directly (not through the embedding's
# forward), so ZeRO-3 has not gathered it: "mat1 and mat2 shapes cannot be multiplied (1x0 and 32x16)".
CASES = [(2, arch, method) for arch in fsdp_steps.ARCHS for method in fsdp_steps.METHODS] + [
    (3, arch, method) for arch in fsdp_steps.ARCHS for method in ("lora", "seq_bn")]


def deepspeed_on_cpu() -> None:
    """accelerate 1.16 gives DeepSpeed no process group on a CPU-only machine (no accelerator backend: its state says
    one process on every rank). The state, made here with the gloo backend first, is what the Trainers use
    (`use_configured_state`); the only departure from a GPU run."""
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")


def config(stage: int) -> dict:
    zero = {"stage": stage}
    if stage == 3:
        zero["stage3_param_persistence_threshold"] = 0  # partition even tiny parameters (adapters included)
    return {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "zero_allow_untested_optimizer": True,
            "optimizer": {"type": "SGD", "params": {"lr": "auto", "momentum": MOMENTUM}}}


def main() -> None:
    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    deepspeed_on_cpu()
    world = int(os.environ["WORLD_SIZE"])
    rows, labels = fsdp_steps.data()
    data = [{"input_ids": row, "labels": int(label)} for row, label in zip(rows, labels)]
    for stage, arch, method in CASES:
        model = build(arch, method)  # before the ZeRO-3 arguments exist: no zero.Init (distributed/deepspeed.py)
        run = out / f"zero{stage}_{arch}_{method}"
        args = TrainingArguments(str(run), max_steps=STEPS, per_device_train_batch_size=GLOBAL_BATCH // world,
                                 learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=MAX_GRAD_NORM,
                                 train_sampling_strategy="sequential", save_strategy="steps", save_steps=STEPS,
                                 report_to="none", disable_tqdm=True, seed=0, deepspeed=config(stage),
                                 accelerator_config={"use_configured_state": True})
        trainer = AdapterTrainer(model=model, args=args, train_dataset=data)
        trainer.train()
        trainer.save_model(str(run / "saved"))
        # one DeepSpeed Accelerator per accelerate state: drop it (keeping the process group) for the next case,
        # and the global ZeRO-3 config these arguments set (the next model would be built under zero.Init)
        AcceleratorState._reset_state(reset_partial_state=False)
        unset_hf_deepspeed_config()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
