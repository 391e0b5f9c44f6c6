"""DvoRA: VeRA with DoRA's learned magnitude, as the `adapters` package computes it:

    y = m / ||W + dW_u|| * (W x + bias + s dW_u x),   dW_u = diag(b) B diag(d) A   (unscaled; s = alpha / r)

per output row, the norm in the graph (gradients flow through it), m starting at the row norms of W. The package's
norm leaves s out (the same when alpha == r, its default) and scales the bias too: kept, to give its outputs.
Its merge (`m * (W + dW_u) / ||W + dW_u||`, bias untouched) is not its forward whenever s != 1 or there is a
bias; ours writes exactly the forward: `W' = scale * (W + s dW_u)`, `bias' = scale * bias`.

(A small module of its own: DoRA for LoRA was being built in parallel; one shared magnitude is the lead's merge.)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...nn.dtypes import cast
from ...projection import Projection
from .config import LoRAConfig
from .vera import Vera, VeraShared


def base_weight(projection: Projection) -> torch.Tensor:
    """W (out, in) of `projection`, detached, not copied where a view will do (the base is frozen)."""
    w = projection.module.weight.detach()
    w = w.t() if projection.transposed else w
    rows = projection.rows
    if rows is None:
        return w
    return w[rows] if isinstance(rows, slice) else w.index_select(0, rows.to(w.device))


class Magnitude(nn.Module):
    """m (out,), as `magnitude.weight`."""

    def __init__(self, initial: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(initial.clone())


class DvoRA(Vera):
    combine = None  # it rescales the whole output: an Average weighs its change to the output

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, shared: VeraShared,
                 projection: Projection):
        super().__init__(in_features, out_features, config, shared)
        self.__dict__["projection"] = projection  # not a submodule: the model owns it
        with torch.no_grad():
            self.magnitude = Magnitude(torch.linalg.norm(base_weight(projection).float(), dim=1))

    def routable(self) -> bool:
        return False

    def unscaled_weight(self) -> torch.Tensor:
        a, b = self.frozen()
        return (self.vera_lambda_b.unsqueeze(1) * b.to(self.vera_lambda_b.dtype)) \
            @ (self.vera_lambda_d.unsqueeze(1) * a.to(self.vera_lambda_d.dtype))

    def scale(self) -> torch.Tensor:
        """m / ||W + dW_u|| per output row, in the adapter's dtype."""
        w = base_weight(self.__dict__["projection"])
        delta = self.unscaled_weight()
        return self.magnitude.weight / torch.linalg.norm(w.to(delta.dtype) + delta, dim=1)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        dtype = self.vera_lambda_d.dtype
        if x.dtype != dtype or out.dtype != dtype:
            return cast(self.forward(cast(x, dtype), cast(out, dtype)), out.dtype)
        return self.scale() * (out + self.delta(x))

    def delta_weight(self) -> torch.Tensor:  # pragma: no cover - DvoRA merges through merge_into
        raise TypeError("a DvoRA module has no additive weight update: it rescales the whole output")

    def merge_into(self, projection: Projection) -> None:
        with torch.no_grad():
            scale = self.scale().unsqueeze(1)
            weight = projection.weight()
            merged = scale * (weight.to(scale.dtype) + self.scaling * self.unscaled_weight())
            bias = projection.bias()
            projection.set(merged, None if bias is None else scale.squeeze(1) * bias.to(scale.dtype))
