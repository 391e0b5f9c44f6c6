"""LoRA ("add": `W x + s B A x`) and (IA)^3 ("scale": `l * (W x + b)`, or `W (l * x) + b` for `scale_inputs`) on
nn.Linear projections.

Both attach at the projection (a "linear" site: its forward taken over, or a forward hook on a fused slice), so
the model's own modules and state-dict keys stay untouched; merging folds the update into the weight and the site
then skips it. What the site and the projection composition ask of a module here (the protocol, no import):
- `module(x, out)`: the adapted output;
- `run_whole(projection, x, transposed, args, kwargs)`: the whole projection's output computed by the module
  itself when it runs alone there (None: not now) — one plain LoRA as one fused autograd node (fused.py), the
  projection of a scaled input for `IA3Input`;
- `combine` ("add": `delta(x)`, "scale": `scale(x)`, None) for `Average`, and `routable()` /
  `routed_factors()` for per-example routing in one batched pass.
A `Projection` stands for the (out, in) weight whatever the module stores (nn.Linear, Conv1D, a fused slice).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.dtypes import cast
from ...nn.gating import Gate
from ...projection import Projection
from ...quantized import float_weight
from .config import LoRAConfig
from . import fused


class LoRA(nn.Module):
    """`out + (alpha / r) * B (A dropout(x))`; A is (r, in), B is (out, r) as in the `adapters` package and peft."""

    combine = "add"

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, r: int | None = None,
                 alpha: float | None = None):
        """`r` / `alpha`: this projection's, where `rank_pattern` / `alpha_pattern` give it others."""
        super().__init__()
        r = config.r if r is None else r
        self.scaling = config.scaling_of(r, config.alpha if alpha is None else alpha)
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        self.lora_B = nn.Parameter(torch.empty(out_features, r))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.gate = Gate(in_features) if config.use_gating else None
        with torch.no_grad():
            if config.init_weights == "lora":
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
                nn.init.zeros_(self.lora_B)
            elif config.init_weights == "bert":
                nn.init.normal_(self.lora_A, std=0.02)
                nn.init.normal_(self.lora_B, std=0.02)
            elif config.init_weights == "gaussian":  # peft's
                nn.init.normal_(self.lora_A, std=1 / r)
                nn.init.zeros_(self.lora_B)
            elif config.init_weights == "orthogonal":  # peft's: B A = 0, as q_even q_odd^T = 0
                q, _ = torch.linalg.qr(torch.randn(r, r))
                self.lora_A.copy_(torch.randn(in_features, r // 2).mm(q[0::2]).T / 10.0)
                self.lora_B.copy_(torch.randn(r // 2, out_features).T.mm(q[1::2]) / 10.0)
            elif config.init_weights != "ia3":  # pissa / olora: set from the weight by init.py; drawn as peft's
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear, so both use the RNG alike
                nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
            else:  # "ia3"
                nn.init.ones_(self.lora_A)
                nn.init.ones_(self.lora_B)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        dtype = self.lora_A.dtype
        if x.dtype != dtype or out.dtype != dtype:  # weights in another dtype than the activations (dtypes.py)
            return out + cast(self.delta(cast(x, dtype)), out.dtype)
        delta = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        if self.gate is not None:  # the gate replaces alpha / r
            return out + delta * self.gate(x).unsqueeze(-1)
        if isinstance(self.scaling, torch.Tensor):  # prepared for hot-swapping (hotswap.py): a graph input
            return out + delta * self.scaling
        return torch.add(out, delta, alpha=self.scaling)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The update alone, `(alpha / r) B A x` (or gated), in x's dtype; what an `Average` of LoRA adapters
        weighs."""
        if x.dtype != self.lora_A.dtype:
            return cast(self.delta(cast(x, self.lora_A.dtype)), x.dtype)
        delta = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        if self.gate is not None:
            return delta * self.gate(x).unsqueeze(-1)
        return delta * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def run_whole(self, projection: nn.Module, x, transposed: bool, args: tuple, kwargs: dict):
        """The fused node (fused.py) where it is eligible, else None (the site runs the plain path)."""
        if type(self) is not LoRA:  # the exact math it reproduces; subclasses compute something else
            return None
        found = fused.fused_args(self, projection, x)
        return None if found is None else fused.fused_lora(x, *found, transposed)

    def routable(self) -> bool:
        """Whether per-example routing may apply it as batched factors (no gate, no active dropout)."""
        return self.gate is None and not (self.training and isinstance(self.dropout, nn.Dropout) and self.dropout.p > 0)

    def routed_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A, self.lora_B * self.scaling

    def routed_stamp(self) -> tuple | None:
        """What `routed_factors()` is made of (tensors by identity and version), so routing may cache them; None
        for a subclass with factors of its own."""
        if type(self).routed_factors is not LoRA.routed_factors:
            return None
        params = self._parameters
        return params["lora_A"], params["lora_B"], self.scaling

    def merge_into(self, projection: Projection) -> None:
        projection.set(projection.weight() + self.delta_weight())


def _ia3_vector(size: int, config: LoRAConfig) -> nn.Parameter:
    """An (IA)^3 vector: ones ("ia3"), N(0, 0.02) ("bert"), or zeros ("lora", as the `adapters` package)."""
    vector = torch.empty(size)
    with torch.no_grad():
        if config.init_weights == "ia3":
            nn.init.ones_(vector)
        elif config.init_weights == "bert":
            nn.init.normal_(vector, std=0.02)
        else:
            nn.init.zeros_(vector)
    return nn.Parameter(vector)


class IA3(nn.Module):
    """`out * (alpha * l)`: scales the projection's whole output, bias included (the `adapters` package's
    semantics)."""

    combine = "scale"
    run_whole = None

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig):
        super().__init__()
        self.scaling = config.scaling
        self.ia3_l = _ia3_vector(out_features, config)
        self.gate = Gate(in_features) if config.use_gating else None

    def vector(self) -> torch.Tensor:
        plain = not isinstance(self.scaling, torch.Tensor) and self.scaling == 1.0  # (a tensor: hotswap.py)
        return self.ia3_l if plain else self.ia3_l * self.scaling

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out * self.scale(x)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The factor on the output, `alpha * l` (times the gate when gated), in x's dtype; what an `Average`
        weighs."""
        if self.gate is not None:
            return cast(self.vector() * self.gate(x).unsqueeze(-1), x.dtype)
        return cast(self.vector(), x.dtype)

    def routable(self) -> bool:
        return self.gate is None

    def routed_factors(self) -> tuple[torch.Tensor]:
        return (self.vector(),)

    def merge_into(self, projection: Projection) -> None:
        v, bias = self.vector().detach(), projection.bias()
        projection.set(projection.weight() * v[:, None], None if bias is None else bias * v)


class IA3Input(nn.Module):
    """`W (alpha * l * x) + b`: scales a whole projection's input (peft's feedforward (IA)^3, the paper's FFN
    scaling). The site feeds the scaled input to the projection itself when this is all that runs there
    (`run_whole`); inside a composition, `forward` adds the change from the output it is given."""

    combine = None

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig):
        super().__init__()
        self.scaling = config.scaling
        self.ia3_l = _ia3_vector(in_features, config)
        self.gate = None  # config validation refuses use_gating with scale_inputs
        self.__dict__["projection"] = None  # set by the method: the Projection whose input this scales

    def vector(self) -> torch.Tensor:
        plain = not isinstance(self.scaling, torch.Tensor) and self.scaling == 1.0  # (a tensor: hotswap.py)
        return self.ia3_l if plain else self.ia3_l * self.scaling

    def run_whole(self, projection: nn.Module, x, transposed: bool, args: tuple, kwargs: dict):
        if len(args) != 1 or kwargs:
            return None
        return type(projection).forward(projection, x * self.vector().to(x.dtype))

    def routable(self) -> bool:
        return False

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        projection = self.__dict__["projection"]
        weight = float_weight(projection.module)  # (dequantized, on a quantized projection)
        weight = weight.t() if projection.transposed else weight
        return out + F.linear(x * (self.vector() - 1).to(x.dtype), weight.to(x.dtype))

    def merge_into(self, projection: Projection) -> None:
        projection.set(projection.weight() * self.vector().detach()[None, :])

