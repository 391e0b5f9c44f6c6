"""torchao backend: an `nn.Linear` whose weight `quantize_` replaced by a torchao tensor subclass (torchao 0.18:
`Int8WeightOnlyConfig` and `Int8DynamicActivationInt8WeightConfig` give an `Int8Tensor`, int8 rows `qdata` with
float scales, per row / tensor / group).

Why this shape: the module stays an `nn.Linear`, only its weight parameter is another tensor type, so adapters read
its (out, in) shape from the weight and attach as to a float linear. A merge dequantizes, adds the update and
quantizes into a new `Int8Tensor` with the same granularity, mapping, activation settings and dtype (as torchao's own
transform does: a new parameter, never an in-place write), so `save` keeps a copy of the old tensor's data and
`restore` puts that back bit for bit. Other torchao tensor types attach and train; merging into them is refused
(there is no general "quantize like this one" in torchao). A weight with an activation pre-scale (AWQ /
SmoothQuant) stores `W diag(s)`, not W, so it is refused too.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn


def _torchao():
    return sys.modules.get("torchao")  # not imported by the user: no weight can be one of its tensors


def _int8_tensor():
    module = sys.modules.get("torchao.quantization.quantize_.workflows.int8.int8_tensor")
    return None if module is None else module.Int8Tensor


class TorchAO:
    name = "torchao"

    def matches(self, module: nn.Module) -> bool:
        ao = _torchao()
        if ao is None or not isinstance(module, nn.Linear):
            return False
        base = getattr(sys.modules.get("torchao.utils"), "TorchAOBaseTensor", None)
        weight = module._parameters.get("weight")
        return base is not None and isinstance(weight, base)

    def shape(self, module):
        out, in_ = module.weight.shape
        return out, in_

    def dtype(self, module):
        return module.weight.dtype  # the float dtype it dequantizes to (the subclass reports it as its dtype)

    def dequantize(self, module):
        weight = module.weight
        if getattr(weight, "act_pre_scale", None) is not None:
            raise _error(module, "its torchao weight has an activation pre-scale (AWQ / SmoothQuant): it stores "
                                 "W diag(s), not W, so it cannot be read or merged as a plain weight")
        if not hasattr(weight, "dequantize"):
            raise _error(module, f"torchao's {type(weight).__name__} has no dequantize()")
        return weight.dequantize().detach()

    def requantize(self, module, weight):
        from torchao.quantization.quant_primitives import MappingType
        old = module.weight
        int8 = _int8_tensor()
        if int8 is None or type(old) is not int8:
            from ..errors import AdapterError
            raise AdapterError(f"cannot merge into a {type(module).__name__} whose weight is torchao's "
                               f"{type(old).__name__}: only Int8Tensor weights (Int8WeightOnlyConfig, "
                               "Int8DynamicActivationInt8WeightConfig) can be requantized; use the adapter unmerged")
        symmetric = old.zero_point is None or not old.zero_point.any()
        new = int8.from_hp(weight.detach().to(old.device, old.dtype).contiguous(), _granularity(old),
                           mapping_type=MappingType.SYMMETRIC if symmetric else MappingType.ASYMMETRIC,
                           act_quant_kwargs=old.act_quant_kwargs, act_quant_scale=old.act_quant_scale,
                           act_quant_zero_point=old.act_quant_zero_point, reduce_range=old.reduce_range)
        module.weight = nn.Parameter(new, requires_grad=False)

    def save(self, module):
        return module.weight._apply_fn_to_data(torch.clone)  # every inner tensor copied, attributes kept

    def restore(self, module, saved):
        module.weight = nn.Parameter(saved._apply_fn_to_data(torch.clone), requires_grad=False)


def _granularity(weight):
    """The block size `weight` was quantized with, as a torchao granularity (per row (1, K), per tensor (N, K) and
    per group (1, G) are all blocks)."""
    from torchao.quantization.granularity import PerBlock
    return PerBlock(tuple(weight.block_size))


def _error(module, why: str):
    from ..errors import AdapterError
    return AdapterError(f"cannot use the weight of {type(module).__name__} ({why})")
