"""Where AdapterFusion layers live on a model: their container and lookups (the API is fusion_api.py).

Fusion weights live in their own container on the model, `model.adapterkit_fusion.<fusion name>` with
`layers.<layer_id>.<location>.{query,key,value}.*`: one `FusionLayer` at every residual site where all fused
adapters have a bottleneck module. A fusion is named like its `Fuse` block ("a,b" unless named).
"""

from __future__ import annotations

from typing import Iterator

import torch.nn as nn

from ..blocks import Fuse
from ..errors import AdapterError
from .config import AdapterFusionConfig
from .layer import FusionLayer

FUSION_CONTAINER = "adapterkit_fusion"


class FusionModules(nn.Module):
    """One fusion: its layers per site, its config and the adapters it fuses (in order)."""

    def __init__(self, config: AdapterFusionConfig, adapter_names: list[str]):
        super().__init__()
        self.config = config
        self.adapter_names = list(adapter_names)
        self.layers = nn.ModuleDict()

    def layer_at(self, layer_id: int, location: str) -> FusionLayer | None:
        group = self.layers[str(layer_id)] if str(layer_id) in self.layers else None
        return group[location] if group is not None and location in group else None

    def fusion_layers(self) -> Iterator[FusionLayer]:
        for group in self.layers.values():
            yield from group.values()


def fusion_container(model: nn.Module, create: bool = False) -> nn.ModuleDict | None:
    container = getattr(model, FUSION_CONTAINER, None)
    if container is None and create:
        model.add_module(FUSION_CONTAINER, nn.ModuleDict())
        container = getattr(model, FUSION_CONTAINER)
    return container


def get_fusion(model: nn.Module, name: str) -> FusionModules | None:
    container = fusion_container(model)
    return container[name] if container is not None and name in container else None


def fusion_parameter_ids(model: nn.Module) -> set[int]:
    container = fusion_container(model)
    return set() if container is None else {id(p) for p in container.parameters()}


def fusion_name(adapter_names) -> tuple[str, list[str]]:
    """(fusion name, fused adapter names) of a Fuse block, a list of names or a comma-separated string."""
    if isinstance(adapter_names, Fuse):
        blocks = [c for c in adapter_names.children if not isinstance(c, str)]
        if blocks:
            raise AdapterError(f"a fusion is added over adapter names; {adapter_names!r} contains {blocks[0]!r}")
        return adapter_names.name, list(adapter_names.children)
    if isinstance(adapter_names, str):
        names = [n.strip() for n in adapter_names.split(",")]
    elif isinstance(adapter_names, (list, tuple)) and all(isinstance(n, str) for n in adapter_names):
        names = list(adapter_names)
    else:
        raise AdapterError(f"a fusion is given as Fuse('a', 'b'), ['a', 'b'] or 'a,b'; got {adapter_names!r}")
    if not names or not all(names):
        raise AdapterError(f"a fusion needs at least one adapter name; got {adapter_names!r}")
    return ",".join(names), names
