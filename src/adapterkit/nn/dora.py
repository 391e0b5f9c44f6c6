"""DoRA's magnitude over the normalised direction of `W + dW` (Liu et al., 2024), for any low-rank update
`dW = s * up @ down` (LoRA: up = B, down = A; VeRA: up = diag(b) B, down = diag(d) A).

`Magnitude` holds the learned vector m (one entry per output row) and computes `scale = m / ||W + dW||` (norm of
each output's row of the weight). Two semantics, measured against the reference packages' code:

- "adapters" (the `adapters` package 1.3.0): `y = scale * (W x + b + dW x)`, the bias scaled too; the norm is
  that of `W + up @ down` *without* s (its `delta_w` is unscaled; the same when alpha == r, the default), and it
  stays in the graph (gradients flow through it). m starts at `||W||`.
- "peft" (peft's `use_dora=True`): `y = scale * (W x + dW x) + b`, the bias not scaled; the norm is that of
  `W + s up @ down`, detached (the paper's section 4.3); m starts at `||W + dW||`. With active dropout peft adds
  `(scale - 1) W x' + scale dW x'` to `W x + b` (x' the dropped-out input): `combine(base=W x')`.

Why the norm is computed without the (out, in) matrix `W + dW`: per row i,
`||W_i + s u_i D||^2 = ||W_i||^2 + 2 s u_i (D W_i^T) + s^2 u_i (D D^T) u_i^T`, i.e. one (out, in) x (in, r) product
and (r, r)-sized work; `||W_i||^2` is cached while W is unchanged. Where no graph is recorded (eval, no_grad), the
whole scale is cached, keyed on the versions and storage of every tensor it depends on, so a frozen adapter costs
one multiply per output beyond its low-rank update.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SEMANTICS = ("adapters", "peft")


def _key(*tensors: torch.Tensor) -> tuple:
    """What a cached value of these tensors depends on: identity of the storage, in-place writes, dtype, device."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def row_norms(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor, scaling: float,
              weight_sq: torch.Tensor | None = None) -> torch.Tensor:
    """`||W + scaling * up @ down||` per row of W (out, in): up (out, r), down (r, in). Computed in float32 (or
    double) without forming `W + up @ down`; differentiable in all inputs. `weight_sq`: `||W||^2` per row, if known."""
    acc = torch.promote_types(down.dtype, torch.float32)
    if weight_sq is None:
        weight_sq = weight.to(acc).pow(2).sum(1)
    wd = F.linear(weight if weight.dtype == down.dtype else weight.to(down.dtype), down).to(acc)  # (out, r)
    up, down = up.to(acc), down.to(acc)
    cross = (up * wd).sum(1)
    square = ((up @ (down @ down.t())) * up).sum(1)
    return (weight_sq.to(acc) + (2 * scaling) * cross + (scaling * scaling) * square).clamp_min(0).sqrt()


class Magnitude(nn.Module):
    """DoRA's magnitude vector `weight` (out,) and the scale `m / ||W + dW||` it puts on each output row.

    The owner (a LoRA- or VeRA-type module) passes the base weight (out, in) through a callable, so the weight is
    only read (and sliced, for a part of a fused projection) when the cached scale is stale.
    """

    def __init__(self, out_features: int, semantics: str = "adapters"):
        super().__init__()
        if semantics not in SEMANTICS:
            raise ValueError(f"DoRA semantics {semantics!r}; allowed: {', '.join(SEMANTICS)}")
        self.semantics = semantics
        self.weight = nn.Parameter(torch.empty(out_features))
        self.__dict__["_cache"] = {}  # not state: key -> value (||W||^2, the frozen scale)

    def norm_scaling(self, scaling: float) -> float:
        """The factor on `up @ down` inside the norm: the package leaves it out, peft keeps it."""
        return scaling if self.semantics == "peft" else 1.0

    @torch.no_grad()
    def initialise(self, weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor, scaling: float) -> None:
        """m = ||W|| (the package) or ||W + s up down|| (peft), in m's dtype (nothing to fill on the meta device:
        a dry run or a model built there)."""
        if self.weight.is_meta or weight.is_meta or up.is_meta or down.is_meta:
            return
        if self.semantics == "peft":
            norms = row_norms(weight, up.to(weight.device), down.to(weight.device), scaling)
        else:
            norms = weight.to(torch.promote_types(weight.dtype, torch.float32)).pow(2).sum(1).sqrt()
        self.weight.copy_(norms.to(self.weight))

    def train(self, mode: bool = True):
        self._cache.clear()
        return super().train(mode)

    def _weight_sq(self, source: torch.Tensor, weight_of) -> torch.Tensor:
        """`||W||^2` per row, cached while the base weight is unchanged (a trainable W is recomputed)."""
        if source.requires_grad and torch.is_grad_enabled():
            return weight_of().float().pow(2).sum(1)
        if torch.compiler.is_compiling():  # no Python state for the compiler to guard on
            return weight_of().detach().to(torch.promote_types(source.dtype, torch.float32)).pow(2).sum(1)
        key = ("weight_sq",) + _key(source)
        hit = self._cache.get("weight_sq")
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, weight_of().to(torch.promote_types(source.dtype, torch.float32)).pow(2).sum(1))
            self._cache["weight_sq"] = hit
        return hit[1]

    def scale(self, source: torch.Tensor, weight_of, up: torch.Tensor, down: torch.Tensor, scaling: float,
              dtype: torch.dtype) -> torch.Tensor:
        """`m / ||W + s' up down||` (out,) in `dtype`, with s' per the semantics. `source`: the base module's weight
        parameter (what the cache watches); `weight_of()`: W (out, in) as this owner sees it (its rows)."""
        m = self.weight
        graph = torch.is_grad_enabled() and (m.requires_grad or up.requires_grad or down.requires_grad
                                             or source.requires_grad)
        if graph or torch.compiler.is_compiling():
            return self._scale(source, weight_of, up, down, scaling, dtype)
        # (a value made in inference mode is an inference tensor: reused only there)
        key = _key(source, m, up, down) + (scaling, dtype, torch.is_inference_mode_enabled())
        hit = self._cache.get("scale")
        if hit is None or hit[0] != key:
            hit = (key, self._scale(source, weight_of, up, down, scaling, dtype))
            self._cache["scale"] = hit
        return hit[1]

    def _scale(self, source, weight_of, up, down, scaling: float, dtype) -> torch.Tensor:
        s = self.norm_scaling(scaling)
        if self.semantics == "peft":  # detached: no gradient through the norm
            with torch.no_grad():
                norms = row_norms(weight_of(), up, down, s, self._weight_sq(source, weight_of))
        else:
            norms = row_norms(weight_of(), up, down, s, self._weight_sq(source, weight_of))
        return (self.weight.to(norms.dtype) / norms).to(dtype)

    def combine(self, scale: torch.Tensor, out: torch.Tensor, update: torch.Tensor,
                bias: torch.Tensor | None = None, base: torch.Tensor | None = None) -> torch.Tensor:
        """The adapted output from the projection's output `out` (`W x + b`, or what earlier adapters made of it)
        and the update `update` (`dW x'`); `bias`: b (peft leaves it unscaled); `base`: `W x'` where peft's active
        dropout made x' differ from x."""
        if self.semantics == "adapters":
            return (out + update) * scale
        if base is not None:
            return out + base * (scale - 1) + update * scale
        if bias is None:
            return (out + update) * scale
        return (out - bias + update) * scale + bias

    @torch.no_grad()
    def merged(self, weight: torch.Tensor, bias: torch.Tensor | None, up: torch.Tensor, down: torch.Tensor,
               scaling: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W', b') that compute the adapted output in one projection: `scale (W + s up down)`, and `scale b`
        where the bias is scaled ("adapters"), else b (None: unchanged)."""
        acc = torch.promote_types(weight.dtype, torch.float32)
        w = weight.to(acc)
        up, down = up.to(acc), down.to(acc)
        norms = row_norms(w, up, down, self.norm_scaling(scaling))
        scale = self.weight.to(acc) / norms
        new_weight = (w + scaling * (up @ down)) * scale[:, None]
        new_bias = bias.to(acc) * scale if bias is not None and self.semantics == "adapters" else None
        return new_weight, new_bias
