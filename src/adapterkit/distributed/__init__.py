"""Sharded training: FSDP2 helpers (fsdp.py): shard a model with adapters, save only its adapters and heads."""

from .fsdp import (adapter_parameters, gathered_adapters, is_sharded, load_full_weights, save_adapter,
                   save_all_adapters, shard_model)

__all__ = ["shard_model", "gathered_adapters", "save_adapter", "save_all_adapters", "adapter_parameters",
           "load_full_weights", "is_sharded"]
