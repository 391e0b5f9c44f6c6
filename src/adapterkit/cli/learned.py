"""The check every training command makes before saving: a run whose loss or weights are not finite learned
nothing valid (exit 1, nothing written)."""

from __future__ import annotations

import math

from .errors import RunFailed


def check_learned(model, history: list[dict], result, lr: float) -> None:
    """A run whose loss or trained weights are not finite learned nothing valid: fail before anything is saved."""
    import torch
    bad = next((h for h in history if "loss" in h and not math.isfinite(h["loss"])), None)
    if bad is not None or not math.isfinite(result.training_loss):
        step = bad["step"] if bad else result.global_step
        loss = bad["loss"] if bad else result.training_loss
        raise RunFailed(f"training loss is not finite ({loss}) at step {step}; nothing saved. Check the labels "
                        f"(scale) and try a lower --lr than {lr:g}")
    if any(not torch.isfinite(p).all() for p in model.parameters() if p.requires_grad):
        raise RunFailed(f"trained weights are not finite; nothing saved. Check the labels (scale) and try a lower "
                        f"--lr than {lr:g}")
