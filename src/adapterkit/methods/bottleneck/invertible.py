"""NICE invertible adapters: a coupling block after the embeddings, inverted before an LM head."""

from __future__ import annotations

import torch
import torch.nn as nn

from ...nn.activations import activation, init_bert
from ...nn.dtypes import OwnDtype, cast
from .config import BnConfig


def _subnet(dim_in: int, dim_out: int, reduction_factor: float, non_linearity: str) -> nn.Sequential:
    hidden = int(dim_in // reduction_factor)
    return nn.Sequential(nn.Linear(dim_in, hidden), activation(non_linearity), nn.Linear(hidden, dim_out))


class NICECoupling(OwnDtype):
    """`y1 = x1 + F(x2); y2 = x2 + G(y1)`, exactly invertible: `x2 = y2 - G(y1); x1 = y1 - F(x2)`."""

    def __init__(self, hidden_size: int, reduction_factor: float, non_linearity: str):
        super().__init__()
        self.split1 = hidden_size // 2
        split2 = hidden_size - self.split1
        self.F = _subnet(split2, self.split1, reduction_factor, non_linearity)
        self.G = _subnet(self.split1, split2, reduction_factor, non_linearity)
        self.apply(init_bert)
        self.refresh_dtype()

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        """Computed in the block's own dtype, returned in x's (dtypes.py)."""
        if x.dtype != self.own_dtype:
            return cast(self.forward(cast(x, self.own_dtype), rev), x.dtype)
        x1, x2 = x[..., : self.split1], x[..., self.split1:]
        if not rev:
            y1 = x1 + self.F(x2)
            y2 = x2 + self.G(y1)
        else:
            y2 = x2 - self.G(x1)
            y1 = x1 - self.F(y2)
        return torch.cat((y1, y2), dim=-1)


def build_invertible(state, name: str, config: BnConfig) -> None:
    module = NICECoupling(state.embedding_size, config.inv_adapter_reduction_factor, config.non_linearity)
    state.add_model_module(name, "invertible", module, site="invertible")
