"""Perplexity: exp of the mean cross-entropy over every completion token of a data set (token-weighted, not a
mean of batch means, so it does not depend on the batch size)."""

from __future__ import annotations

import math


def token_losses(model, batch) -> tuple[float, int]:
    """(sum of cross-entropies, number of tokens) over the labelled tokens of one batch."""
    import torch
    import torch.nn.functional as F
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"},
                   **({"labels": labels} if model.config.is_encoder_decoder else {})).logits.float()
    if not model.config.is_encoder_decoder:  # token t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                            reduction="sum")
    return float(total), int((labels != -100).sum()) if isinstance(labels, torch.Tensor) else 0


def perplexity(model, examples: list[dict], collator, batch_size: int, device=None) -> dict:
    import torch
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collator(examples[i:i + batch_size])
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            loss, n = token_losses(model, batch)
            total, count = total + loss, count + n
    model.train(was_training)
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)), "tokens": count}
