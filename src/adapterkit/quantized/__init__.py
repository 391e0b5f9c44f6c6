"""Projections whose weight is stored quantized (bitsandbytes `Linear4bit` / `Linear8bitLt`, torchao tensors).

Why a registry of backends: `Projection` (projection.py) reads and writes a weight as a float (out, in) matrix, and
`merge_snapshot` copies what a merge overwrites. A quantized module keeps a packed tensor plus side state (absmax /
quant map, row scales), so each backend says how to read its shape, dequantize, requantize (a merge: this rounds),
and save / restore its exact stored state (reset: bit for bit). A backend whose library is not imported matches
nothing, so adapterkit never imports bitsandbytes or torchao itself.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn as nn


class QuantizedBackend(Protocol):
    name: str

    def matches(self, module: nn.Module) -> bool: ...
    def shape(self, module: nn.Module) -> tuple[int, int]: ...  # (out, in)
    def dtype(self, module: nn.Module) -> torch.dtype: ...  # the float dtype its weight dequantizes to
    def dequantize(self, module: nn.Module) -> torch.Tensor: ...  # (out, in), never changes the module
    def requantize(self, module: nn.Module, weight: torch.Tensor) -> None: ...
    def save(self, module: nn.Module) -> Any: ...  # an exact copy of the stored weight and its state
    def restore(self, module: nn.Module, saved: Any) -> None: ...


_BACKENDS: list[QuantizedBackend] = []


def register_quantized_backend(backend: QuantizedBackend) -> None:
    """Teach adapterkit a quantized projection type (see `QuantizedBackend`)."""
    _BACKENDS.append(backend)


def backend_of(module: nn.Module) -> QuantizedBackend | None:
    """The backend of a quantized projection module, None for a float one."""
    for backend in _BACKENDS:
        if backend.matches(module):
            return backend
    return None


def is_quantized(module: nn.Module) -> bool:
    return backend_of(module) is not None


def float_weight(module: nn.Module) -> torch.Tensor:
    """The module's weight as its forward uses it: the parameter itself, or (quantized) its dequantized copy."""
    backend = backend_of(module)
    return module.weight if backend is None else backend.dequantize(module)


from . import bnb, torchao  # noqa: E402  (the bitsandbytes and torchao backends)

register_quantized_backend(bnb.FourBit())
register_quantized_backend(bnb.EightBit())
register_quantized_backend(torchao.TorchAO())
