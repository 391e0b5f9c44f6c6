"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for models with adapters: sharding, and adapter-only saving.

Why this layout: the base weights are what is large, so each transformer layer is its own FSDP group (gathered
just before the layer runs, freed right after). The adapters and heads live outside the layers (the `adapterkit`
container, `model.heads`) and the sites read their weights from inside other modules' forwards, so they go into the
root group: gathered once when the model's forward starts, their gradients reduce-scattered once after backward.
They are small (a LoRA is ~0.1-1% of the model), so keeping them whole for one step costs little, and FSDP2 keeps
frozen and trainable parameters in one group (each keeps its own `requires_grad`).

Saving gathers only the parameters that are not the base model's (`DTensor.full_tensor()`, one all-gather per
tensor), puts them in the modules as plain tensors for the length of a `with` block on rank 0, and so every writer
of adapterkit (`save_adapter` in each format, `save_head`, the Trainer's checkpoint) works unchanged there. No base
weight is ever gathered.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import AdapterError


def _fsdp():
    from torch.distributed import fsdp
    return fsdp


def _dtensor_type():
    from torch.distributed.tensor import DTensor
    return DTensor


def is_sharded(model: nn.Module) -> bool:
    """Whether `fully_shard` was applied to `model` (FSDP2)."""
    return isinstance(model, _fsdp().FSDPModule)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _state(model: nn.Module):
    state = getattr(model, "adapter_state", None)
    if state is None:
        raise AdapterError(f"{type(model).__name__} has no adapters (call adapterkit.init(model) or load it with "
                           "AutoAdapterModel) before sharding it")
    return state


def shard_model(model: nn.Module, mesh=None, **fully_shard_options) -> nn.Module:
    """Apply FSDP2 to a model with adapters: each transformer layer (those the architecture interface lists), then
    the whole model, whose group holds the embeddings, the adapters and the heads. In place; returns `model`.

    Call it after `add_adapter(...)`, `add_*_head(...)` and `train_adapter(...)`, before making the optimizer;
    `fully_shard_options` (`reshard_after_forward`, `mp_policy`, `offload_policy`, ...) go to every call. `mesh`:
    a 1-D DeviceMesh (default: all ranks of the default process group, on the model's device type)."""
    fsdp = _fsdp()
    if is_sharded(model):
        raise AdapterError(f"{type(model).__name__} is sharded already (fully_shard was applied to it)")
    if not (dist.is_available() and dist.is_initialized()):
        raise AdapterError("shard_model needs a process group: run under torchrun / accelerate launch and call "
                           "torch.distributed.init_process_group first")
    state = _state(model)
    if mesh is None:
        from torch.distributed.device_mesh import init_device_mesh
        device = next(model.parameters()).device
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in state.layers:
        fsdp.fully_shard(layer, mesh=mesh, **fully_shard_options)
    fsdp.fully_shard(model, mesh=mesh, **fully_shard_options)
    return model


def adapter_parameters(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Parameter]]:
    """(module, name, parameter) of everything that is not the base model: the adapter container, flexible heads
    and task-head modules outside the base (what `AdapterTrainer` checkpoints and `save_adapter` / `save_head`
    write). A tensor shared with the base (an LM decoder tied to the embeddings) counts as the base's."""
    state = _state(model)
    container = {id(p) for p in state.container.parameters()}
    base = {id(p) for p in state.base.parameters()} - container
    seen = set()
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is None or id(param) in base or id(param) in seen:
                continue
            seen.add(id(param))
            yield module, name, param


def _reshard_all(model: nn.Module) -> None:
    """Every FSDP group back to its sharded parameters (a forward without backward, e.g. an evaluation with
    `reshard_after_forward=False`, leaves them gathered), so the registered parameters are the sharded DTensors."""
    for module in model.modules():
        if is_sharded(module):
            module.reshard()


@contextmanager
def gathered_adapters(model: nn.Module, rank0_only: bool = True):
    """Within the block, on rank 0 (every rank with `rank0_only=False`), the adapter and head parameters of a
    sharded model are whole plain tensors, so adapterkit's usual save functions write the normal files; yields
    whether this rank holds them. Every rank must enter (the gather is collective); no base weight is gathered.
    Read-only: the sharded parameters come back on exit, and what was written to the gathered copies is lost.
    On a model that is not sharded, yields True on rank 0 (`rank0_only`) and changes nothing."""
    if not is_sharded(model):
        yield rank() == 0 or not rank0_only
        return
    DTensor = _dtensor_type()
    _reshard_all(model)
    holds = rank() == 0 or not rank0_only
    swapped = []
    try:
        for module, name, param in list(adapter_parameters(model)):
            if not isinstance(param, DTensor):
                continue
            full = param.detach().full_tensor()  # collective: same order on every rank (module order)
            if holds:
                module._parameters[name] = nn.Parameter(full, requires_grad=param.requires_grad)
                swapped.append((module, name, param))
        yield holds
    finally:
        for module, name, param in swapped:
            module._parameters[name] = param


def load_full_weights(param: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a whole tensor (as saved) into a parameter, sharded (DTensor: this rank's shard of it) or not."""
    DTensor = _dtensor_type()
    with torch.no_grad():
        if isinstance(param, DTensor):
            from torch.distributed.tensor import distribute_tensor
            shard = distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements,
                                      src_data_rank=None)
            param.to_local().copy_(shard.to_local())
        else:
            param.copy_(full)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_adapter(model: nn.Module, save_directory: str | os.PathLike, adapter_name: str, **options) -> None:
    """`model.save_adapter(...)` for a sharded model (any format, its head too): adapter and head weights gathered,
    written on rank 0 only; call it on every rank. Returns once the files are written."""
    with gathered_adapters(model) as writer:
        if writer:
            model.save_adapter(save_directory, adapter_name, **options)
    _barrier()


def save_all_adapters(model: nn.Module, save_directory: str | os.PathLike, **options) -> list[str]:
    """`model.save_all_adapters(...)` for a sharded model, written on rank 0; call it on every rank."""
    names = list(_state(model).configs)
    with gathered_adapters(model) as writer:
        if writer:
            model.save_all_adapters(save_directory, **options)
    _barrier()
    return names


__all__ = ["shard_model", "gathered_adapters", "save_adapter", "save_all_adapters", "adapter_parameters",
           "load_full_weights", "is_sharded"]
