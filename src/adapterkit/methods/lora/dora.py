"""DoRA: LoRA with a learned magnitude per output row over the normalised `W + (alpha/r) B A` (nn/dora.py has the
magnitude, the norm and both packages' semantics; this module is the LoRA side).

The base weight is read from the projection the module sits on (its rows, for a part of a fused projection such as
GPT-2's `c_attn`), so DoRA works on GPT-2's Conv1D and on grouped-query k/v, where the `adapters` package fails
with shape errors. Where no graph is recorded the scale is cached (nn/dora.py) and the forward is
`out * scale + u (scale * s B)^T` with `u = A x`: no (out, in) matrix is formed.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.dora import Magnitude
from ...nn.dtypes import cast
from ...projection import Projection
from .config import LoRAConfig
from .modules import LoRA


def live_weight(projection: Projection) -> torch.Tensor:
    """W (out, in) of `projection` as the forward uses it: not detached, not copied (a view where it can be); a
    dequantized copy on a quantized projection."""
    if projection.backend is not None:
        return projection.weight()
    w = projection.module.weight
    w = w.t() if projection.transposed else w
    rows = projection.rows
    if rows is None:
        return w
    return w[rows] if isinstance(rows, slice) else w.index_select(0, rows.to(w.device))


def live_bias(projection: Projection) -> torch.Tensor | None:
    b = getattr(projection.module, "bias", None)
    rows = projection.rows
    if b is None or rows is None:
        return b
    return b[rows] if isinstance(rows, slice) else b.index_select(0, rows.to(b.device))


class DoRA(LoRA):
    """LoRA whose output is renormalised per output row: see nn/dora.py for the two semantics."""

    combine = None  # an Average weighs its change to the output, not a LoRA delta alone

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, projection: Projection,
                 r: int | None = None, alpha: float | None = None):
        super().__init__(in_features, out_features, config, r, alpha)
        self.magnitude = Magnitude(out_features, config.dora_semantics)
        self.__dict__["projection"] = projection  # not a submodule: the model owns it
        self.initialise_magnitude()

    def initialise_magnitude(self) -> None:
        """m from the projection's current weight (again after an init that rewrites it: PiSSA, OLoRA)."""
        projection = self.__dict__["projection"]
        self.magnitude.initialise(live_weight(projection).detach(), self.lora_B, self.lora_A, self.scaling)

    def _scale(self, dtype: torch.dtype) -> torch.Tensor:
        projection = self.__dict__["projection"]
        return self.magnitude.scale(projection.module.weight, lambda: live_weight(projection), self.lora_B,
                                    self.lora_A, self.scaling, dtype)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        dtype = self.lora_A.dtype
        if x.dtype != dtype or out.dtype != dtype:  # weights in another dtype than the activations (dtypes.py)
            return cast(self.forward(cast(x, dtype), cast(out, dtype)), out.dtype)
        projection = self.__dict__["projection"]
        scale = self._scale(dtype)
        dropout_on = isinstance(self.dropout, nn.Dropout) and self.dropout.training and self.dropout.p > 0
        bias = live_bias(projection) if self.magnitude.semantics == "peft" else None
        if self.gate is None and not dropout_on and not torch.is_grad_enabled():
            # frozen: `out * scale (+ (1 - scale) b) + (A x) (scale * s B)^T`, one addmm for the update
            y = out * scale if bias is None else torch.addcmul(cast(bias, dtype), out - cast(bias, dtype), scale)
            up = self.lora_B * (scale * self.scaling)[:, None]
            y2 = y.view(-1, y.shape[-1])
            return y2.addmm_(F.linear(x.reshape(-1, x.shape[-1]), self.lora_A), up.t()).view(y.shape)
        xd = self.dropout(x)
        update = F.linear(F.linear(xd, self.lora_A), self.lora_B)
        update = update * self.gate(x).unsqueeze(-1) if self.gate is not None else update * self.scaling
        base = None
        if dropout_on and self.magnitude.semantics == "peft":
            base = F.linear(xd, cast(live_weight(projection), dtype))
        return self.magnitude.combine(scale, out, update, None if bias is None else cast(bias, dtype), base)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("a DoRA module has no additive delta: it rescales the whole output")  # pragma: no cover

    run_whole = None

    def routable(self) -> bool:
        return False

    def merge_into(self, projection: Projection) -> None:
        weight, bias = self.magnitude.merged(projection.weight(), projection.bias(), self.lora_B.detach(),
                                             self.lora_A.detach(), self.scaling)
        projection.set(weight, bias)
