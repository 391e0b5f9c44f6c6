"""The AdapterFusion API on an adapter model (mixed into `AdapterModelMixin`); layers and their container are
in fusion/, checkpoints in io/fusion.py."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from .blocks import AdapterCompositionBlock, Fuse, parse_composition
from .errors import AdapterError, CheckpointError
from .fusion.config import resolve_fusion_config
from .fusion.container import FusionModules, fusion_container, fusion_name, get_fusion
from .fusion.layer import FusionLayer
from .io.common import reading
from .io.fusion import load_fusion_weights, read_fusion, save_fusion
from .naming import check_adapter_name, check_loaded_name, child_directory
from .registry import member_specs


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
        container = fusion_container(self)
        if container is not None and name in container and not overwrite_ok:
            raise AdapterError(f"an AdapterFusion named {name!r} already exists; pass overwrite_ok=True "
                               "or delete_adapter_fusion it first")
        self._install_fusion(name, self._new_fusion(names, config, name), set_active)
        return name

    def _new_fusion(self, names: list[str], config, name: str) -> FusionModules:
        """The fusion's layers, built and validated but not on the model (a failure changes nothing)."""
        check_adapter_name(name, "fusion")
        state = self.adapter_state
        for adapter in names:
            config_of = self.adapter_state.require(adapter)
            if not any(spec.fusable for _, spec in member_specs(config_of)):
                raise AdapterError(f"AdapterFusion fuses bottleneck adapters; {adapter!r} is a "
                                   f"{config_of.method} adapter")
        config = resolve_fusion_config(config)
        dropout = config.dropout_prob
        if dropout is None:
            dropout = getattr(getattr(self, "config", None), "attention_probs_dropout_prob", 0.0) or 0.0
        fusion = FusionModules(config, names)
        for (layer_id, location), module in state.layer_modules(names[0]):
            if not getattr(module, "fusable", False):  # modules AdapterFusion attends over (their up-projection)
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
        return fusion

    def _install_fusion(self, name: str, fusion: FusionModules, set_active: bool) -> None:
        """Put a built fusion on the model, replacing one of the same name."""
        container = fusion_container(self, create=True)
        if name in container:
            self.delete_adapter_fusion(name)
        container[name] = fusion
        self.adapter_state.invalidate()
        if set_active:
            self.set_active_adapters(Fuse(*fusion.adapter_names, name=name))

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
        directories = [child_directory(save_directory, name, "fusion") for name in names]  # all checked first
        for name, directory in zip(names, directories):
            self.save_adapter_fusion(directory, name, meta_dict, format=format)
        return names

    def load_adapter_fusion(self, adapter_fusion_name_or_path, load_as: str | None = None,
                            set_active: bool = False, overwrite_ok: bool = False) -> str:
        """Load a fusion saved by `save_adapter_fusion` or by adapter-transformers / `adapters`
        (`pytorch_model_adapter_fusion.bin`); the fused adapters must be on the model. Returns its name.

        Read, built and loaded off the model first: a bad checkpoint is a CheckpointError naming the file and
        leaves the model as it was; an existing fusion of the name is replaced only with `overwrite_ok=True`."""
        ckpt = read_fusion(self, Path(adapter_fusion_name_or_path))
        name = load_as if load_as is not None else ckpt.name
        check_loaded_name(name, load_as, ckpt.config_file, "fusion")
        if name in self.adapter_fusions and not overwrite_ok:
            raise AdapterError(f"an AdapterFusion named {name!r} already exists; pass load_as=<another name> or "
                               "overwrite_ok=True")
        try:
            with reading(ckpt.config_file):
                fusion = self._new_fusion(ckpt.adapter_names, ckpt.config, name)
        except AdapterError as e:
            raise CheckpointError(f"{ckpt.config_file}: the fusion does not fit this model: {e}") from None
        load_fusion_weights(fusion, ckpt)
        self._install_fusion(name, fusion, set_active)
        return name


def freeze_fusions(model: nn.Module) -> None:
    """`train_adapter` trains adapters only: every fusion is frozen (as in the `adapters` package)."""
    container = fusion_container(model)
    if container is not None:
        container.requires_grad_(False)
