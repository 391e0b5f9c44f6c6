"""Small helpers shared across modules."""

from __future__ import annotations

import torch.nn as nn


def _child(module: nn.Module, part: str) -> nn.Module | None:
    """`module.<part>`; an integer part (negative too) indexes a ModuleList / Sequential (`layer.-1`)."""
    if part.lstrip("-").isdigit() and isinstance(module, (nn.ModuleList, nn.Sequential)):
        index = int(part)
        return module[index] if -len(module) <= index < len(module) else None
    child = getattr(module, part, None)
    return child if isinstance(child, nn.Module) else None


def find_submodule(root: nn.Module, path: str) -> nn.Module | None:
    """`root.<path>` for a dotted path, or None where a part is missing. An empty path is the root itself."""
    module = root
    for part in filter(None, path.split(".")):
        module = _child(module, part)
        if module is None:
            return None
    return module


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """`root.<path>` for a dotted path; an empty path is the root itself; `a|b`: the first alternative that exists
    (the layer's residual where checkpoints differ). Clear error when a part is missing."""
    if "|" in path:
        for alternative in path.split("|"):
            found = find_submodule(root, alternative)
            if found is not None:
                return found
        raise AttributeError(f"{type(root).__name__} has none of the submodules {path.split('|')}; the architecture "
                             "interface does not match this model")
    module = root
    for part in filter(None, path.split(".")):
        child = _child(module, part)
        if child is None:
            raise AttributeError(
                f"{type(root).__name__} has no submodule at '{path}' (missing '{part}' on {type(module).__name__}); "
                "the architecture interface does not match this model"
            )
        module = child
    return module


def max_positions(model_config) -> int | None:
    """The number of positions a transformers config allows (`max_position_embeddings` / `n_positions`), or None."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
