"""A target module that is not a projection: nn.Embedding, nn.Conv1d, nn.Conv2d (peft's LoRA targets them too).

`KernelTarget` gives the projection site and the merge what they ask of a `Projection` (the module, no rows,
`weight()` / `bias()` / `set()` through merge_snapshot, so merge and reset are exact), with the weight in the
module's own layout: (num_embeddings, embedding_dim) for an embedding, (out, in, *kernel) for a convolution. The
methods' modules for these targets read the geometry (`kind`, stride, padding, ...) off `target.module`.
"""

from __future__ import annotations

import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ..configs.module_targets import is_target_key
from ..errors import AdapterError
from ..projection import Projection
from ..quantized import backend_of

KERNEL_TYPES = {nn.Embedding: "embedding", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}


def kind_of(module: nn.Module) -> str | None:
    """"linear" (nn.Linear, Conv1D, a quantized linear), "embedding", "conv1d", "conv2d", or None (unsupported)."""
    if backend_of(module) is not None or isinstance(module, (nn.Linear, Conv1D)):
        return "linear"
    for module_type, kind in KERNEL_TYPES.items():
        if isinstance(module, module_type):
            return kind
    return None


class KernelTarget(Projection):
    """An embedding or convolution as a merge target (the whole weight; `in_features` / `out_features`: the
    number of embeddings and their size, or the input and output channels)."""

    def __init__(self, module: nn.Module, rows=None):
        kind = kind_of(module)
        if kind not in ("embedding", "conv1d", "conv2d"):
            raise AdapterError(f"{type(module).__name__} is not an nn.Embedding, nn.Conv1d or nn.Conv2d")
        self.module, self.kind, self.rows = module, kind, None
        self.transposed, self.backend = False, None
        if kind == "embedding":
            self.in_features, self.out_features = module.num_embeddings, module.embedding_dim
        else:
            self.in_features, self.out_features = module.in_channels, module.out_channels
        self.full_out_features = self.out_features


def target_for(module: nn.Module) -> Projection:
    """The merge target of a selected module: a Projection for a linear one, else a KernelTarget."""
    return Projection(module) if kind_of(module) == "linear" else KernelTarget(module)


def targeted_modules(state, name: str) -> list:
    """(site key, module) of each module a module-targeted adapter `name` keeps at model level."""
    return [(("model", key), module) for key, module in state.container[name].shared.items() if is_target_key(key)]
