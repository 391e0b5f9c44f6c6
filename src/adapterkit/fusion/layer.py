"""One AdapterFusion layer: attention of a query over the fused adapters' up-projections at one site.

Math and parameter names as in adapter-transformers / `adapters` (`BertFusion`): with `U` the adapters' outputs
(batch, seq, n_adapters, d), `scores = (Q q) . (K U)`, `p = softmax(dropout(scores) / T)`, `out = p . (V U) + r`.
Differences: the temperature anneals only in training forwards (the `adapters` package also lower it at inference), and the
attention weights are reported per site when asked (`output_adapter_fusion_attentions=True`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..nn.dtypes import OwnDtype, cast
from .config import AdapterFusionConfig


class FusionLayer(OwnDtype):
    def __init__(self, hidden_size: int, config: AdapterFusionConfig, dropout_prob: float):
        super().__init__()
        self.config = config
        self.query = nn.Linear(hidden_size, hidden_size) if config.query else None
        self.key = nn.Linear(hidden_size, hidden_size) if config.key else None
        self.value = nn.Linear(hidden_size, hidden_size, bias=False) if config.value else None
        self.dropout = nn.Dropout(dropout_prob)
        self.temperature = 50.0 if config.temperature else 1.0
        self.__dict__["_where"] = None  # (state, fusion name, layer id, location); not a submodule
        self.reset_parameters()
        self.refresh_dtype()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for linear in (self.query, self.key, self.value):
            if linear is not None:
                nn.init.normal_(linear.weight, std=0.02)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)
        if self.value is not None and self.config.value_initialized:
            self.value.weight.fill_(1e-6).fill_diagonal_(1.0)

    def bind(self, state, name: str, layer_id: int, location: str) -> "FusionLayer":
        self.__dict__["_where"] = (state, name, layer_id, location)
        return self

    def forward(self, query: torch.Tensor, ups: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`query` and `residual`: (batch, seq, d); `ups`: (batch, seq, n_adapters, d). Computed in the layer's own
        dtype, returned in the query's (methods/dtypes.py)."""
        own = self.own_dtype
        if own is not None and query.dtype != own:
            return cast(self.forward(cast(query, own), cast(ups, own), cast(residual, own)), query.dtype)
        cfg = self.config
        if cfg.residual_before:
            ups = ups + residual.unsqueeze(2)
        q = self.query(query) if self.query is not None else query
        k = self.key(ups) if self.key is not None else ups
        v = self.value(ups) if self.value is not None and cfg.value_before_softmax else ups
        scores = torch.matmul(q.unsqueeze(2), k.transpose(-2, -1)).squeeze(2)
        probs = torch.softmax(self.dropout(scores) / self.temperature, dim=-1)
        if self.training and cfg.temperature:
            self.temperature = max(self.temperature - 0.05, 1.0)
        out = torch.matmul(probs.unsqueeze(2), v).squeeze(2)
        if self.value is not None and not cfg.value_before_softmax:
            out = self.value(out)
        if not cfg.residual_before:
            out = out + residual
        self._record(probs)
        return out

    def _record(self, probs: torch.Tensor) -> None:
        where = self.__dict__["_where"]
        if where is None or where[0].record.fusion_attentions is None:
            return
        state, name, layer_id, location = where
        found = state.record.fusion_attentions.setdefault(name, {}).setdefault(layer_id, {})
        array = probs.detach().float().cpu().numpy()
        # rows routed to this fusion in several groups (adapter_names=...) are reported one group after another
        found[location] = np.concatenate([found[location], array]) if location in found else array
