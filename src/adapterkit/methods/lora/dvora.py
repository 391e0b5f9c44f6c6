"""DvoRA: VeRA with DoRA's learned magnitude, as the `adapters` package computes it (nn/dora.py, semantics
"adapters"):

    y = m / ||W + dW_u|| * (W x + bias + s dW_u x),   dW_u = diag(b) B diag(d) A   (unscaled; s = alpha / r)

per output row, the norm in the graph (gradients flow through it), m starting at the row norms of W. The package's
merge (`m * (W + dW_u) / ||W + dW_u||`, bias untouched) is not its forward whenever s != 1 or there is a bias;
ours writes exactly the forward: `W' = scale * (W + s dW_u)`, `bias' = scale * bias`.
"""

from __future__ import annotations

import torch

from ...nn.dora import Magnitude
from ...nn.dtypes import cast
from ...projection import Projection
from .config import LoRAConfig
from .dora import live_weight
from .vera import Vera, VeraShared


class DvoRA(Vera):
    combine = None  # it rescales the whole output: an Average weighs its change to the output

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, shared: VeraShared,
                 projection: Projection):
        super().__init__(in_features, out_features, config, shared)
        self.__dict__["projection"] = projection  # not a submodule: the model owns it
        self.magnitude = Magnitude(out_features, "adapters")
        up, down = self.unscaled_factors()
        self.magnitude.initialise(live_weight(projection).detach(), up.detach(), down.detach(), 1.0)

    def routable(self) -> bool:
        return False

    def unscaled_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(diag(b) B, diag(d) A): `dW_u = up @ down`."""
        a, b = self.frozen()
        return (self.vera_lambda_b.unsqueeze(1) * b.to(self.vera_lambda_b.dtype),
                self.vera_lambda_d.unsqueeze(1) * a.to(self.vera_lambda_d.dtype))

    def scale(self) -> torch.Tensor:
        """m / ||W + dW_u|| per output row, in the adapter's dtype."""
        projection = self.__dict__["projection"]
        up, down = self.unscaled_factors()
        return self.magnitude.scale(projection.module.weight, lambda: live_weight(projection).detach(), up, down,
                                    self.scaling, self.vera_lambda_d.dtype)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        dtype = self.vera_lambda_d.dtype
        if x.dtype != dtype or out.dtype != dtype:
            return cast(self.forward(cast(x, dtype), cast(out, dtype)), out.dtype)
        return self.magnitude.combine(self.scale(), out, self.delta(x))

    def delta_weight(self) -> torch.Tensor:  # pragma: no cover - DvoRA merges through merge_into
        raise TypeError("a DvoRA module has no additive weight update: it rescales the whole output")

    def merge_into(self, projection: Projection) -> None:
        up, down = self.unscaled_factors()
        weight, bias = self.magnitude.merged(projection.weight(), projection.bias(), up.detach(), down.detach(),
                                             self.scaling)
        projection.set(weight, bias)
