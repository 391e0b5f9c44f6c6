"""Bottleneck adapters (sequential and parallel): the module at a residual site and its pre / adapt / finish steps.

Semantics follow adapter-transformers 3.1 exactly (pre_forward / forward / post_forward), so
Pfeiffer is `LN(h + x + f(LN(h + x)))`, Houlsby `LN(x + h + f(h))` and parallel `LN(h + x + s f(x))`,
with h the sublayer output (after dense + dropout), x the sublayer input and LN the layer's own norm.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from ...nn.activations import activation, init_bert
from ...nn.drop_path import DropPath
from ...nn.dtypes import OwnDtype, cast, in_own_dtype
from ...nn.gating import Gate
from ...nn.seeding import reseed
from .config import BnConfig
from .phm import PHMLinear, PHMShared


class BottleneckAdapter(OwnDtype):
    """One bottleneck adapter at one site: `down -> act -> up`, scaled, with optional adapter norms."""

    fusable = True  # AdapterFusion attends over its up-projection (`pre` / `up_projection`)

    def __init__(self, hidden_size: int, bottleneck_size: int, config: BnConfig, phm: PHMShared | None = None):
        super().__init__()
        self.config = config
        self.is_parallel = config.is_parallel
        self.norm_before = nn.LayerNorm(hidden_size) if config.ln_before else None
        width = max(1, bottleneck_size)
        if config.phm_layer:
            self.down = PHMLinear(hidden_size, width, "down", config, phm)
            self.up = PHMLinear(width, hidden_size, "up", config, phm)
        else:
            self.down = nn.Linear(hidden_size, width)
            self.up = nn.Linear(width, hidden_size)
        self.act = activation(config.non_linearity)
        if config.scaling == "learned":
            self.scaling = nn.Parameter(torch.ones(1))
        elif config.scaling == "channel":
            self.scaling = nn.Parameter(torch.ones(hidden_size))
        else:
            self.scaling = float(config.scaling)
        self.norm_after = nn.LayerNorm(hidden_size) if config.ln_after else None
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.drop_path = DropPath(config.stochastic_depth) if config.stochastic_depth > 0 else None
        self.gate = Gate(hidden_size) if config.use_gating else None
        self.reset_parameters()
        self.refresh_dtype()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        reseed()  # init_weights_seed: the package seeds here, after constructing the layers (nn/seeding.py)
        init = self.config.init_weights
        if self.config.phm_layer:  # PHM layers keep their own init; "mam_adapter" still starts as identity
            if init == "mam_adapter":
                for p in self.up.parameters(recurse=False):
                    nn.init.zeros_(p)
            return
        if init == "bert":
            for module in (self.norm_before, self.down, self.up, self.norm_after):
                if module is not None:
                    init_bert(module)
        elif init == "mam_adapter":
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        else:  # "houlsby"
            for lin in (self.down, self.up):
                nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2)
                nn.init.zeros_(lin.bias)

    def delta(self, z: torch.Tensor) -> torch.Tensor:
        """`dropout(s * up(act(down(norm_before(z)))))`, times the gate of `z` when gated."""
        return self._gated(self.up_projection(z), z)

    def up_projection(self, z: torch.Tensor) -> torch.Tensor:
        """`s * drop_path(up(act(down(norm_before(z)))))`: what AdapterFusion attends over (before dropout and
        gate). Computed in the adapter's own dtype, returned in z's (dtypes.py)."""
        h = cast(z, self.own_dtype)
        up = self.up(self.act(self.down(self.norm_before(h) if self.norm_before is not None else h)))
        if self.drop_path is not None:  # stochastic depth: before the scaling, as the package
            up = self.drop_path(up)
        if not (isinstance(self.scaling, float) and self.scaling == 1.0):
            up = up * self.scaling
        return cast(up, z.dtype)

    def _gated(self, up: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = self.dropout(up)
        if self.gate is not None:
            out = out * self.gate(z).unsqueeze(-1)
        return out

    def pre(self, hidden: torch.Tensor, x: torch.Tensor, layer_norm: Callable | None,
            query_before_ln: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The `adapters` package's pre_forward: (adapter input, adapter residual, fusion query).

        `hidden` is the running sublayer output, `x` the sublayer input; `query_before_ln` (a fusion setting)
        picks the query for AdapterFusion, None when no fusion asks for one.
        """
        if self.is_parallel:  # a parallel adapter reads the sublayer input
            return x, x, (x if query_before_ln is not None else None)
        cfg = self.config
        residual = hidden if cfg.residual_before_ln is True else None
        query = hidden if query_before_ln else None
        z = hidden
        if cfg.original_ln_before:
            z = z + x
            if cfg.residual_before_ln == "post_add":
                residual = z
            if layer_norm is not None:
                z = layer_norm(z)
        if cfg.residual_before_ln is False:
            residual = z
        if query_before_ln is False:
            query = z
        return z, residual, query

    def adapt(self, z: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The `adapters` package's forward: (adapter output, the up-projection for fusion)."""
        up = self.up_projection(z)
        out = self._gated(up, z)
        if self.is_parallel:
            return (in_own_dtype(self.norm_after, self.own_dtype, out) if self.norm_after is not None else out), up
        if self.config.adapter_residual_before_ln:
            out = out + residual
        if self.norm_after is not None:
            out = in_own_dtype(self.norm_after, self.own_dtype, out)
        if not self.config.adapter_residual_before_ln:
            out = out + residual
        return out, up

    def step(self, hidden: torch.Tensor, x: torch.Tensor, layer_norm: Callable | None) -> torch.Tensor:
        """One adapter of a stack: pre + adapt. `hidden` is the running sublayer output."""
        z, residual, _ = self.pre(hidden, x, layer_norm)
        return self.adapt(z, residual)[0]

    def finish(self, out: torch.Tensor, h: torch.Tensor, x: torch.Tensor, layer_norm: Callable | None
               ) -> torch.Tensor:
        """The last adapter's post_forward: residual add and the layer's own norm."""
        if self.is_parallel:
            out = out + h
        if self.config.original_ln_after:
            out = out + x
            if layer_norm is not None:
                out = layer_norm(out)
        return out

    def finish_in_layer(self, out: torch.Tensor, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`finish` for a layer that goes on to compute `h' + x` (and its norm) itself: the h' that gives it."""
        if self.is_parallel:
            out = out + h
        # original_ln_after=False would skip the layer's residual add; with no norm in the way, take it back out
        return out if self.config.original_ln_after else out - x
