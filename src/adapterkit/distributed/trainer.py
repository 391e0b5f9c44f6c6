"""The Trainer's save path under FSDP (accelerate's FSDP plugin, `fsdp_version: 2`) and DeepSpeed, adapter-only.

transformers' Trainer, under FSDP, gathers the whole model for `save_model` (FULL_STATE_DICT) and writes the whole
model again next to the optimizer for resuming (`save_fsdp_model`, full or sharded). An adapter checkpoint needs
neither: the adapters and heads are gathered alone (fsdp.py) and written on rank 0 in the adapter checkpoint
format, and resuming reads them back from there; only the optimizer (whose state covers only the trainable
parameters) and the scheduler are saved as the Trainer does.
"""

from __future__ import annotations

import os

import torch

from .deepspeed import gathered_zero3_adapters
from .fsdp import gathered_adapters, is_sharded


def sharded_model(trainer):
    """The trainer's model if FSDP2 has sharded it, else None."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return model if is_sharded(model) else None


def save_model(trainer, model, output_dir) -> None:
    """`trainer._save(output_dir)` with the adapters and heads gathered (every rank joins; rank 0 writes)."""
    with gathered_adapters(model):
        trainer._save(output_dir)


def save_model_deepspeed(trainer, output_dir) -> None:
    """`trainer._save(output_dir)` under DeepSpeed: ZeRO-3 adapters and heads gathered (every rank joins), rank 0
    writes; never the engine's whole-model checkpoint the Trainer writes there."""
    with gathered_zero3_adapters(trainer.accelerator.unwrap_model(trainer.model)):
        trainer._save(output_dir)


def save_deepspeed_state(trainer, output_dir: str) -> None:
    """The engine's checkpoint for resuming (optimizer, scheduler) without the frozen base weights, as the Trainer
    does it for a peft model."""
    from accelerate.utils import DeepSpeedSchedulerWrapper
    from transformers.trainer import SCHEDULER_NAME

    trainer.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
    if trainer.args.should_save and not isinstance(trainer.lr_scheduler, DeepSpeedSchedulerWrapper):
        torch.save(trainer.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))  # not the engine's


def save_optimizer_and_scheduler(trainer, output_dir: str) -> None:
    """The optimizer as accelerate saves it under FSDP (`optimizer.bin` on rank 0, or sharded, per the plugin's
    state-dict type), and the scheduler; no model weights."""
    from accelerate.utils import save_fsdp_optimizer
    from transformers.trainer import SCHEDULER_NAME

    save_fsdp_optimizer(trainer.accelerator.state.fsdp_plugin, trainer.accelerator, trainer.optimizer, trainer.model,
                        output_dir)
    if trainer.args.should_save:
        torch.save(trainer.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))


__all__ = ["sharded_model", "save_model", "save_optimizer_and_scheduler", "save_model_deepspeed",
           "save_deepspeed_state"]
