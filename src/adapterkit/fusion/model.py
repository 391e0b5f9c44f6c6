"""The AdapterFusion API on an adapter model (mixed into `AdapterModelMixin`).

Fusion weights live in their own container on the model, `model.adapterkit_fusion.<fusion name>` with
`layers.<layer_id>.<location>.{query,key,value}.*`: one `FusionLayer` at every residual site where all fused
adapters have a bottleneck module. A fusion is named like its `Fuse` block ("a,b" unless named).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from ..composition import AdapterCompositionBlock, Fuse, parse_composition
from ..errors import AdapterError
from .config import AdapterFusionConfig, resolve_fusion_config
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


def _fuse_blocks(setup) -> Iterator[Fuse]:
    if isinstance(setup, Fuse):
        yield setup
    if isinstance(setup, AdapterCompositionBlock):
        for child in setup.children:
            yield from _fuse_blocks(child)


class FusionMixin:
    """add / delete / train / save / load AdapterFusion; the value regulariser."""

    def add_adapter_fusion(self, adapter_names, config=None, name: str | None = None, overwrite_ok: bool = False,
                           set_active: bool = False) -> str:
        """Add a fusion of bottleneck adapters: `Fuse("a", "b")`, `["a", "b"]` or `"a,b"`; `config`: "dynamic"
        (default), "static", a dict or an `AdapterFusionConfig`. Returns the fusion's name."""
        default, names = fusion_name(adapter_names)
        name = name or default
        if "." in name or not name.strip():
            raise AdapterError(f"invalid fusion name {name!r}: use a non-empty name without dots")
        state = self.adapter_state
        from ..compose.support import families
        for adapter in names:
            config_of = self.adapter_state.require(adapter)
            if "bottleneck" not in families(config_of):
                raise AdapterError(f"AdapterFusion fuses bottleneck adapters; {adapter!r} is a "
                                   f"{config_of.architecture} adapter")
        container = fusion_container(self, create=True)
        if name in container:
            if not overwrite_ok:
                raise AdapterError(f"an AdapterFusion named {name!r} already exists; pass overwrite_ok=True "
                                   "or delete_adapter_fusion it first")
            self.delete_adapter_fusion(name)
        config = resolve_fusion_config(config)
        dropout = config.dropout_prob
        if dropout is None:
            dropout = getattr(getattr(self, "config", None), "attention_probs_dropout_prob", 0.0) or 0.0
        fusion = FusionModules(config, names)
        from ..methods.bottleneck import BottleneckAdapter
        for (layer_id, location), module in state.layer_modules(names[0]):
            if not isinstance(module, BottleneckAdapter):
                continue
            if any(state.module_at(other, (layer_id, location)) is None for other in names[1:]):
                continue
            layer = FusionLayer(state.hidden_size, config, dropout).bind(state, name, layer_id, location)
            param = next(module.parameters())
            if str(layer_id) not in fusion.layers:
                fusion.layers[str(layer_id)] = nn.ModuleDict()
            fusion.layers[str(layer_id)][location] = layer.to(device=param.device, dtype=param.dtype)
        if not len(fusion.layers):
            raise AdapterError(f"adapters {names} share no layer and location; nothing to fuse")
        fusion.train(self.training)
        container[name] = fusion
        state.invalidate()
        if set_active:
            self.set_active_adapters(Fuse(*names, name=name))
        return name

    def delete_adapter_fusion(self, adapter_names) -> None:
        """Remove a fusion (by Fuse block, list or name); it leaves the active setup."""
        name = adapter_names if isinstance(adapter_names, str) else fusion_name(adapter_names)[0]
        container = fusion_container(self)
        if container is None or name not in container:
            raise AdapterError(f"no AdapterFusion named {name!r}; fusions: "
                               f"{', '.join(map(repr, container or {})) or '(none)'}")
        del container[name]
        state = self.adapter_state
        if any(block.name == name for block in _fuse_blocks(state.active)):
            state.active = None
        state.invalidate()

    @property
    def adapter_fusions(self) -> dict[str, list[str]]:
        """fusion name -> the adapters it fuses."""
        container = fusion_container(self)
        return {} if container is None else {name: list(f.adapter_names) for name, f in container.items()}

    def train_adapter_fusion(self, adapter_setup, unfreeze_adapters: bool = False) -> None:
        """Train the fusion(s) in `adapter_setup` (e.g. `Fuse("a", "b")`): freeze the base model and the adapters
        (unless `unfreeze_adapters`), activate the setup, train mode."""
        setup = parse_composition(adapter_setup)
        if setup is None:
            raise AdapterError("train_adapter_fusion needs a setup with a Fuse block, e.g. Fuse('a', 'b')")
        state = self.adapter_state
        state.check_setup(setup)
        trained = {block.name for block in _fuse_blocks(setup)}
        if not trained:
            raise AdapterError(f"train_adapter_fusion needs a Fuse block in the setup, got {setup!r}")
        names = setup.flatten()
        self.freeze_model(True)
        for adapter, modules in state.container.items():
            modules.requires_grad_(unfreeze_adapters and adapter in names)
        for fusion_name_, fusion in fusion_container(self).items():
            fusion.requires_grad_(fusion_name_ in trained)
        self.set_active_adapters(setup)
        self.train()

    def get_fusion_regularization_loss(self) -> torch.Tensor | None:
        """`0.01 * sum ||I - V||^2` over the trainable value matrices of fusions with `regularization=True`
        (add it to the training loss); None when there is none."""
        total = None
        for fusion in (fusion_container(self) or {}).values():
            if not fusion.config.regularization:
                continue
            for layer in fusion.fusion_layers():
                if layer.value is None or not layer.value.weight.requires_grad:
                    continue
                weight = layer.value.weight
                target = torch.eye(weight.shape[0], device=weight.device, dtype=weight.dtype)
                loss = 0.01 * (target - weight).pow(2).sum()
                total = loss if total is None else total + loss
        return total

    def save_adapter_fusion(self, save_directory, adapter_names, meta_dict: dict | None = None,
                            format: str = "adapterkit", safetensors: bool = True) -> None:
        """Save a fusion to a directory: `adapter_fusion_config.json` + `adapter_fusion.safetensors` (atomic).

        `format="adapterhub"` writes AdapterHub's names to `model_adapter_fusion.safetensors` (the `adapters`
        package: `load_adapter_fusion(dir, use_safetensors=True)`) or, with `safetensors=False`,
        `pytorch_model_adapter_fusion.bin` (its default)."""
        from .io import save_fusion
        name = adapter_names if isinstance(adapter_names, str) else fusion_name(adapter_names)[0]
        save_fusion(self, Path(save_directory), name, meta_dict, format, safetensors)

    def adapter_fusion_to(self, adapter_names, device=None, dtype=None) -> None:
        """Move one fusion's layers to `device` and / or cast them to `dtype`."""
        name = adapter_names if isinstance(adapter_names, str) else fusion_name(adapter_names)[0]
        fusion = get_fusion(self, name)
        if fusion is None:
            raise AdapterError(f"no AdapterFusion named {name!r}; fusions: "
                               f"{', '.join(map(repr, self.adapter_fusions)) or '(none)'}")
        fusion.to(device=device, dtype=dtype)

    def save_all_adapter_fusions(self, save_directory, meta_dict: dict | None = None,
                                 format: str = "adapterkit") -> list[str]:
        """Save every fusion to `save_directory/<fusion name>` (as `save_adapter_fusion`); returns the names."""
        names = list(self.adapter_fusions)
        for name in names:
            self.save_adapter_fusion(Path(save_directory) / name, name, meta_dict, format=format)
        return names

    def load_adapter_fusion(self, adapter_fusion_name_or_path, load_as: str | None = None,
                            set_active: bool = False) -> str:
        """Load a fusion saved by `save_adapter_fusion` or by adapter-transformers / `adapters`
        (`pytorch_model_adapter_fusion.bin`); the fused adapters must be on the model. Returns its name."""
        from .io import load_fusion
        return load_fusion(self, Path(adapter_fusion_name_or_path), load_as, set_active)


def freeze_fusions(model: nn.Module) -> None:
    """`train_adapter` trains adapters only: every fusion is frozen (as in the anchors)."""
    container = fusion_container(model)
    if container is not None:
        container.requires_grad_(False)
