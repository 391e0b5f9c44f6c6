"""Task-arithmetic merging of tensors: magnitude / random (DARE) pruning, sign election (TIES), disjoint mean.

Method-agnostic: a list of same-shaped tensors (one per source) and their weights in, one merged tensor out. The
math and its order of random draws are those of peft's merge_utils (`add_weighted_adapter`): a DARE mask is drawn
per tensor, in the order given, by `torch.bernoulli` on a tensor of the source's own dtype and device (nothing is
drawn at density 1), so seeding torch's generator the same way gives peft's masks. The arithmetic itself runs in
at least float32.

- "linear": `sum_i w_i t_i`.
- "magnitude_prune": each t_i keeps its int(density * numel) largest magnitudes, then the weighted sum.
- "dare_linear": each t_i keeps each entry with probability density, rescaled by 1 / density; the weighted sum.
- "ties" / "dare_ties": magnitude / DARE pruning, then per entry the sign of the (weighted-less) total ("total") or
  of the count of signs ("frequency") is elected; the weighted entries of that sign are averaged (disjoint mean).
"""

from __future__ import annotations

import torch

KINDS = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
SIGN_METHODS = ("total", "frequency")
_NEEDS_DENSITY = {"ties", "dare_linear", "dare_ties", "magnitude_prune"}
_ELECTS_SIGN = {"ties", "dare_ties"}


def needs_density(kind: str) -> bool:
    return kind in _NEEDS_DENSITY


def elects_sign(kind: str) -> bool:
    return kind in _ELECTS_SIGN


def magnitude_pruned(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """`tensor` with all but its int(density * numel) largest magnitudes set to zero."""
    if density >= 1:
        return tensor
    flat = tensor.reshape(-1)
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat.abs(), k=int(density * tensor.numel()), largest=True).indices] = 1
    return tensor * keep.reshape(tensor.shape)


def dare_pruned(tensor: torch.Tensor, density: float, dtype: torch.dtype) -> torch.Tensor:
    """Each entry kept with probability `density` (a mask drawn at `tensor`'s dtype), rescaled by 1 / density;
    returned in `dtype`. Draws nothing at density 1."""
    if density >= 1:
        return tensor.to(dtype)
    mask = torch.bernoulli(torch.full_like(tensor, density))
    return tensor.to(dtype) * mask.to(dtype) / density


def _elected(stacked: torch.Tensor, method: str) -> torch.Tensor:
    """Per source and entry: whether its sign is the elected one (a zero never is)."""
    sign = stacked.sign()
    magnitude = stacked.sum(dim=0) if method == "total" else sign.sum(dim=0)
    return sign == torch.where(magnitude >= 0, 1, -1)


def merge(kind: str, tensors: list[torch.Tensor], weights: list[float], density: float | None = None,
          sign_method: str = "total") -> torch.Tensor:
    """The merged tensor (in at least float32; the caller casts). `tensors` are one per source, `weights` theirs."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    if kind in ("magnitude_prune", "ties"):
        tensors = [magnitude_pruned(t.to(dtype), density) for t in tensors]
    elif kind in ("dare_linear", "dare_ties"):
        tensors = [dare_pruned(t, density, dtype) for t in tensors]
    else:
        tensors = [t.to(dtype) for t in tensors]
    stacked = torch.stack(tensors)
    scale = torch.tensor(weights, dtype=dtype, device=stacked.device).view(-1, *([1] * (stacked.dim() - 1)))
    weighted = stacked * scale
    if kind not in _ELECTS_SIGN:
        return weighted.sum(dim=0)
    elected = _elected(stacked, sign_method)
    return (weighted * elected).sum(dim=0) / elected.sum(dim=0).clamp(min=1)
