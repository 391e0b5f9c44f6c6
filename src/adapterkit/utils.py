"""Small helpers shared across modules."""

from __future__ import annotations

import torch.nn as nn


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """`root.<path>` for a dotted path; an empty path is the root itself. Clear error when a part is missing."""
    module = root
    for part in filter(None, path.split(".")):
        if not hasattr(module, part):
            raise AttributeError(
                f"{type(root).__name__} has no submodule at '{path}' (missing '{part}' on {type(module).__name__}); "
                "the architecture interface does not match this model"
            )
        module = getattr(module, part)
    return module
