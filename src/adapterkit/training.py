"""`AdapterTrainer`: the transformers `Trainer`, with checkpoints that hold only adapters and heads.

The base model is frozen and identical before and after training, so a checkpoint needs only what trains:
the adapter container, flexible heads, and any task-head modules outside the base model (e.g. the
`classifier` of a `BertForSequenceClassification`). Everything else the Trainer saves (optimizer, scheduler,
RNG, trainer state) is unchanged, so resuming, `load_best_model_at_end` and multi-process runs (`torchrun`,
`accelerate launch`) work as with any model: the Trainer's own distributed logic is untouched.

All checkpoint writing and reading of weights goes through `save_trainable` / `load_trainable`.
"""

from __future__ import annotations

from contextlib import contextmanager

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME

from .distributed import fsdp, trainer as fsdp_trainer
from .errors import AdapterError
from .forward_hooks import FORWARD_ARGUMENTS
from .heads.io import read_json, read_weights
from .io.staging import one_commit, recover
from .model import AdapterModelMixin

CHECKPOINT_CONFIG_NAME = "adapterkit_checkpoint.json"
CHECKPOINT_WEIGHTS_NAME = "adapterkit_checkpoint.safetensors"


def _base_prefix(model: nn.Module) -> str:
    base = model.adapter_state.base
    if base is model:
        return ""
    return next(name for name, module in model.named_modules() if module is base) + "."


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Model-keyed tensors of everything but the base model: adapters, heads, task-head modules.

    Tensors shared with the base model (an LM decoder tied to the embeddings) are left out, as are base keys.
    """
    state = model.adapter_state
    prefix = _base_prefix(model)
    container = {id(t) for t in state.container.state_dict(keep_vars=True).values()}
    base = {id(t) for t in state.base.state_dict(keep_vars=True).values()} - container
    out = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        in_base = id(tensor) in base or (key.startswith(prefix) if prefix else id(tensor) not in container)
        if not in_base:
            out[key] = tensor.detach()
    return out


def save_trainable(model: nn.Module, directory: str | os.PathLike) -> None:
    """Write adapters + heads (+ their configs, for a readable check on load) into `directory`, in one commit."""
    directory = Path(directory)
    weights, seen = {}, set()
    for key, tensor in trainable_state_dict(model).items():
        tensor = tensor.to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in seen:  # tied across adapters (MTL-LoRA's shared A / B):
            tensor = tensor.clone()                      # a copy per key; loading writes both into the one tensor
        seen.add(tensor.untyped_storage().data_ptr())
        weights[key] = tensor
    state = model.adapter_state
    meta = {
        "format": "adapterkit.training", "format_version": 1,
        "adapters": {name: config.to_dict() for name, config in state.configs.items()},
        "heads": {name: head.config for name, head in getattr(model, "heads", {}).items()},
        "keys": sorted(weights),
    }
    with one_commit(directory) as stage:
        stage.write_with(CHECKPOINT_WEIGHTS_NAME, lambda p: save_file(weights, p, metadata={"format": "pt"}))
        stage.write_bytes(CHECKPOINT_CONFIG_NAME, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))


def load_trainable(model: nn.Module, directory: str | os.PathLike) -> None:
    """Load what `save_trainable` wrote into a model set up the same way (same adapters and heads).

    Every saved key must exist on the model with the same shape and every adapter/head tensor must be in the
    file; otherwise nothing is loaded and the error names the file and the keys.
    """
    directory = Path(directory)
    recover(directory)  # a save a dead process committed but did not finish
    meta = read_json(directory / CHECKPOINT_CONFIG_NAME, "adapterkit training checkpoint")
    if meta.get("format") != "adapterkit.training":
        raise AdapterError(f"{directory / CHECKPOINT_CONFIG_NAME}: not an adapterkit training checkpoint "
                           f"(format {meta.get('format')!r})")
    path = directory / CHECKPOINT_WEIGHTS_NAME
    if not path.is_file():
        raise AdapterError(f"{path}: missing adapter/head weights of the checkpoint")
    weights = read_weights(path)
    expected = trainable_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise AdapterError(f"{path}: checkpoint does not match the model's adapters and heads: "
                           f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    wrong = [k for k, v in weights.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise AdapterError(f"{path}: shape mismatch for {wrong[:5]}")
    for key, tensor in weights.items():
        fsdp.load_full_weights(expected[key], tensor)  # a sharded (FSDP2) parameter takes its shard


@contextmanager
def _quantized_base_allowed(model):
    """transformers' Trainer refuses a quantized model that is not a peft model ("purely quantized"). An adapterkit
    model with trainable adapters is not one: checked here the same way (a trainable quantization method, something
    to train), then the Trainer is told, for its constructor only, that adapters are attached."""
    if model is None or not getattr(model, "is_quantized", False) or getattr(model, "_hf_peft_config_loaded", False):
        yield
        return
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_trainable:
        raise AdapterError(f"{quantizer.quantization_config.quant_method} quantization does not support training")
    if not any(p.requires_grad for p in model.adapterkit.parameters()):
        raise AdapterError("this quantized model has no trainable adapter; add one and call train_adapter(...) first")
    model._hf_peft_config_loaded = True
    try:
        yield
    finally:
        del model._hf_peft_config_loaded


class AdapterTrainer(Trainer):
    """A `Trainer` for adapterkit models whose checkpoints contain only adapters and heads.

    Use it exactly like `Trainer`, after `model.train_adapter(...)`. With an AdapterModel and no
    `args.label_names`, the label names come from the active head (QA heads: start/end positions).
    """

    def __init__(self, model=None, args=None, *pargs, **kwargs):
        if model is not None and not isinstance(model, AdapterModelMixin):
            raise AdapterError(f"AdapterTrainer needs an adapterkit model; call adapterkit.init(model) on this "
                               f"{type(model).__name__} (or load it with AutoAdapterModel) and train_adapter(...)")
        with _quantized_base_allowed(model):
            super().__init__(model, args, *pargs, **kwargs)
        head = getattr(model, "active_head", None)
        if self.args.label_names is None and head is not None:
            self.label_names = list(model.heads[head].label_names)

    def _set_signature_columns_if_needed(self) -> None:
        """The adapter hooks' per-row forward arguments (`task_ids`, `adapter_names`, `skip_layers`) are the model's
        too: a data set's `task_ids` column reaches the forward (Trainer drops columns model.forward does not name)."""
        super()._set_signature_columns_if_needed()
        self._signature_columns += [k for k in FORWARD_ARGUMENTS if k not in self._signature_columns]

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under FSDP2 and DeepSpeed ZeRO-3 only the adapters and heads are gathered (never the base model) and rank 0
        writes them."""
        sharded = fsdp_trainer.sharded_model(self)
        if sharded is not None:
            fsdp_trainer.save_model(self, sharded, output_dir)
        elif self.is_deepspeed_enabled:  # ZeRO-3: adapters gathered alone; no whole-model engine checkpoint
            fsdp_trainer.save_model_deepspeed(self, output_dir)
        else:
            return super().save_model(output_dir, _internal_call)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if fsdp_trainer.sharded_model(self) is not None:
            return fsdp_trainer.save_optimizer_and_scheduler(self, output_dir)  # FSDP: no second copy of the model
        if self.is_deepspeed_enabled:
            return fsdp_trainer.save_deepspeed_state(self, output_dir)  # without the frozen base weights
        super()._save_optimizer_and_scheduler(output_dir)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        save_trainable(self.accelerator.unwrap_model(self.model), output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        load_trainable(self.accelerator.unwrap_model(model if model is not None else self.model),
                       resume_from_checkpoint)

    def _load_best_model(self) -> None:
        load_trainable(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)


__all__ = ["AdapterTrainer", "save_trainable", "load_trainable", "trainable_state_dict"]
