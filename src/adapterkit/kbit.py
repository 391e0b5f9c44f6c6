"""`prepare_model_for_kbit_training`: what a quantized (or half-precision) base needs before adapter training,
peft's function of the same name (peft/utils/other.py) for adapterkit models.

Why each step: the non-quantized half-precision parameters (norms, embeddings, heads) are cast to float32, where
small updates and the norms' statistics do not round away; with gradient checkpointing the reentrant checkpoint
only recomputes a segment whose input needs a gradient, and a frozen base's embeddings give none, so the input
embeddings' output is made to require one (not needed with `use_reentrant=False`, transformers' default; it
registers that hook itself for models fed `input_ids`, so it is added here only where it did not). The base is frozen: call
`train_adapter` afterwards, which makes exactly the adapter (and its head) trainable again.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .errors import AdapterError

_HALF = (torch.float16, torch.bfloat16)


def prepare_model_for_kbit_training(model: nn.Module, use_gradient_checkpointing: bool = True,
                                    gradient_checkpointing_kwargs: dict | None = None) -> nn.Module:
    """Freeze every parameter, cast half-precision float parameters that are not quantized to float32, and (by
    default) turn on the model's gradient checkpointing with input gradients. Returns the model (changed in place).
    """
    kwargs = dict(gradient_checkpointing_kwargs or {})
    for param in model.parameters():
        param.requires_grad_(False)
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.dtype in _HALF and type(param) is nn.Parameter:  # (quantized parameters are subclasses)
                param.data = param.data.to(torch.float32)
    for module in model.modules():  # adapter modules that track their own dtype (nn/dtypes.py)
        if hasattr(module, "refresh_dtype"):
            module.refresh_dtype()
    if not use_gradient_checkpointing:
        return model
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if enable is None or not getattr(model, "supports_gradient_checkpointing", False):
        raise AdapterError(f"{type(model).__name__} does not support gradient checkpointing in transformers; "
                           "pass use_gradient_checkpointing=False")
    enable(gradient_checkpointing_kwargs=kwargs or None)  # (no kwargs: transformers' use_reentrant=False)
    # transformers registers the input-gradient hooks itself for models fed input_ids; registering them again
    # would leak a hook that disable_input_require_grads() no longer removes
    if kwargs.get("use_reentrant", False) and not getattr(model, "_require_grads_hooks", None):
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
        else:
            model.get_input_embeddings().register_forward_hook(lambda module, args, out: out.requires_grad_(True))
    return model
