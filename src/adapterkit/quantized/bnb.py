"""bitsandbytes backends: `Linear4bit` (nf4 / fp4, blockwise absmax, optionally double-quantized) and
`Linear8bitLt` (int8 rows with per-row scales SCB), following peft's tuners/lora/bnb.py for merge (dequantize,
add, quantize again into a new parameter, as bitsandbytes quantizes when a parameter is moved to a device).

Exact state: a merge replaces the weight parameter, and `save` deep-copies the packed data with its QuantState (4-bit)
or CB / SCB (8-bit), so `restore` puts back the very bits. On CPUs with AVX512-BF16 a 4-bit layer repacks its
weight in place for inference (`packing_format_for_cpu`); `dequantize` unpacks a copy and never that in place.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn as nn


def _bnb():
    return sys.modules.get("bitsandbytes")  # not imported: no module can be one of its layers


class FourBit:
    name = "bitsandbytes 4-bit"

    def matches(self, module: nn.Module) -> bool:
        bnb = _bnb()
        return bnb is not None and isinstance(module, bnb.nn.Linear4bit)

    def shape(self, module):
        return module.out_features, module.in_features

    def _canonical(self, module):
        """(packed data, QuantState) in bitsandbytes' standard layout, copies where the CPU repacking is undone."""
        weight = module.weight
        state = weight.quant_state if weight.quant_state is not None else getattr(module, "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            try:  # (private in bitsandbytes 0.50: what its own state_dict() calls, without changing the layer)
                from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
            except ImportError:
                raise _error(module, "its 4-bit weight is in bitsandbytes' CPU-repacked layout and this "
                                     "bitsandbytes has no inverse for it; set support_avx512bf16_for_cpu=False on "
                                     "the layers before the first inference call") from None
            return _convert_weight_packed_for_cpu_inverse(weight.data.clone(), copy.deepcopy(state))
        return weight.data, state

    def dtype(self, module):
        state = self._canonical(module)[1]
        return state.dtype

    def dequantize(self, module):
        import bitsandbytes.functional as F
        data, state = self._canonical(module)
        return F.dequantize_4bit(data, state)

    def requantize(self, module, weight):
        import bitsandbytes as bnb
        old = module.weight
        new = bnb.nn.Params4bit(weight.detach().to("cpu", self.dtype(module)).contiguous(), requires_grad=False,
                                blocksize=old.blocksize, compress_statistics=old.compress_statistics,
                                quant_type=old.quant_type, quant_storage=old.quant_storage, module=module)
        module.weight = new.to(old.device)  # moving to a device is what quantizes it
        module.quant_state = module.weight.quant_state

    def save(self, module):
        weight = module.weight
        return copy.deepcopy(weight.data), copy.deepcopy(weight.quant_state), dict(
            blocksize=weight.blocksize, compress_statistics=weight.compress_statistics, quant_type=weight.quant_type,
            quant_storage=weight.quant_storage)

    def restore(self, module, saved):
        import bitsandbytes as bnb
        data, state, kwargs = saved
        module.weight = bnb.nn.Params4bit(data, requires_grad=False, quant_state=state, module=module,
                                          bnb_quantized=True, **kwargs)
        module.quant_state = state


class EightBit:
    name = "bitsandbytes 8-bit"

    def matches(self, module: nn.Module) -> bool:
        bnb = _bnb()
        return bnb is not None and isinstance(module, bnb.nn.Linear8bitLt)

    def shape(self, module):
        return module.out_features, module.in_features

    def _scales(self, module):
        weight = module.weight
        scb = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
        if scb is None:
            raise _error(module, "its row scales (SCB) are not set (a layer with fp16 weights, or not quantized yet)")
        return scb

    def dtype(self, module):
        return self._scales(module).dtype

    def dequantize(self, module):
        import bitsandbytes.functional as F
        if module.weight.dtype != torch.int8:
            raise _error(module, f"its weight is {module.weight.dtype}, not int8 (has_fp16_weights=True?)")
        return F.int8_vectorwise_dequant(module.weight.data, self._scales(module).to(module.weight.device))

    def requantize(self, module, weight):
        import bitsandbytes as bnb
        old = module.weight
        module.weight = bnb.nn.Int8Params(weight.detach().to("cpu").contiguous(), requires_grad=False,
                                          has_fp16_weights=False).to(old.device)
        module.state.reset_grads()  # (CB, SCB: the next forward takes them from the new weight)

    def save(self, module):
        weight, state = module.weight, module.state
        return (copy.deepcopy(weight.data), _clone(getattr(weight, "CB", None)), _clone(getattr(weight, "SCB", None)),
                _clone(state.CB), _clone(state.SCB))

    def restore(self, module, saved):
        import bitsandbytes as bnb
        data, cb, scb, state_cb, state_scb = saved
        module.weight = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
        module.state.reset_grads()
        module.state.CB, module.state.SCB = state_cb, state_scb
        if module.weight.CB is None and state_cb is not None:
            module.weight.data = state_cb  # as the layer's forward leaves it: the weight's data is state.CB


def _clone(t):
    return None if t is None else t.clone()


def _error(module, why: str):
    from ..errors import AdapterError
    return AdapterError(f"cannot read the weight of {type(module).__name__}: {why}")
