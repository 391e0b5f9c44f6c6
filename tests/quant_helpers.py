"""Helpers shared by the quantized-base tests (test_qlora.py: bitsandbytes, test_torchao.py: torchao).

The reference for "right" is a float model whose projections hold the dequantized weights: a quantized layer
computes `dequant(W) x` (up to float rounding), so the adapted quantized model must equal that float model with the
same adapter as closely as the unadapted pair agree.
"""

from __future__ import annotations

import torch
import transformers as tf
from transformers.pytorch_utils import Conv1D

import adapterkit
from adapterkit.quantized import backend_of


def dequantized_float(base_dir, qmodel, cls=tf.LlamaForCausalLM):
    """The float model with every quantized projection of `qmodel` replaced by its dequantized weight."""
    model = cls.from_pretrained(base_dir)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, module in qmodel.named_modules():
            backend = backend_of(module)
            if backend is not None:
                weight = backend.dequantize(module)  # (out, in); GPT-2's Conv1D stores (in, out)
                modules[name].weight.copy_(weight.t() if isinstance(modules[name], Conv1D) else weight)
    return adapterkit.init(model.eval())


def quantized_names(model) -> list[str]:
    return [n for n, m in model.named_modules() if backend_of(m) is not None]


def _plain(key: str, value: torch.Tensor) -> dict:
    """A state-dict entry as plain tensors: a tensor subclass (torchao's quantized weights) as its inner tensors
    (int data, scales, ...) and its attributes."""
    if type(value) in (torch.Tensor, torch.nn.Parameter) or not hasattr(value, "__tensor_flatten__"):
        return {key: value.detach().clone()}
    names, attributes = value.__tensor_flatten__()
    out = {f"{key}.{name}": getattr(value, name).detach().clone() for name in names}
    out[f"{key}.(attributes)"] = (type(value), repr(attributes))
    return out


def stored(model) -> dict:
    """Every base tensor as stored (packed weights with their quant state / SCB / scales), copied."""
    return {k: v for key, value in model.state_dict().items() if "adapterkit" not in key
            for k, v in _plain(key, value).items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], tuple):
            assert a[key] == b[key], key
        else:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def randomise(model, name: str, scale: float = 0.3, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapterkit[name].parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def copy_adapter(source, target, name: str) -> None:
    target.adapterkit[name].load_state_dict(source.adapterkit[name].state_dict())


def float_error(qmodel, fmodel, batch) -> float:
    """How closely the quantized model and its dequantized float twin agree without adapters: float rounding."""
    qmodel.set_active_adapters(None), fmodel.set_active_adapters(None)
    return (logits(qmodel, batch) - logits(fmodel, batch)).abs().max().item()
