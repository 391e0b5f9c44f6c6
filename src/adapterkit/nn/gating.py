"""UniPELT-style gates: `g = mean_t sigmoid(W x_t + b)`, one value per example (and per gate head).

A gate remembers where it sits (adapter, layer, location) so that, when the caller asked for
`output_adapter_gating_scores=True`, it can report its value to the model's state.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .dtypes import cast


class Gate(nn.Linear):
    """A Linear(in, heads) whose forward returns the gate values, shaped (batch, heads)."""

    def __init__(self, in_features: int, heads: int = 1):
        super().__init__(in_features, heads)
        with torch.no_grad():
            nn.init.normal_(self.weight, std=0.02)
            nn.init.zeros_(self.bias)
        self.__dict__["_where"] = None  # (state, adapter name, layer id, location); not a submodule

    def bind(self, state, name: str, layer_id, location: str) -> "Gate":
        self.__dict__["_where"] = (state, name, layer_id, location)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values, in x's dtype (computed in the gate's own, see dtypes.py)."""
        gate = cast(torch.sigmoid(super().forward(cast(x, self.weight.dtype))).mean(dim=1), x.dtype)
        where = self.__dict__["_where"]
        if where is not None and where[0].record.gating_scores is not None:
            state, name, layer_id, location = where
            state.record.gating_scores.setdefault(name, {}).setdefault(layer_id, {})[location] = (
                gate.detach().float().cpu().numpy())
        return gate
