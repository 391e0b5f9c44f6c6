"""The check forward: one tiny forward with hooks on every module of the first layer of each stack (call order,
first input and output of each call), and once more through a probing attention function registered in
transformers' `AttentionInterface` (which module calls the registry, with which value states)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers import PretrainedConfig
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

PROBE = "adapterkit_probe"
_SEEN: dict = {}  # id(attention module) -> (module, query, key, value), filled during a probing forward
BIASES: set = set()  # keyword arguments of the last probing forward that add a bias over keys (T5's position_bias)


@dataclass
class Call:
    path: str  # relative to the layer ("" for the layer itself)
    module: nn.Module
    start: int
    end: int = -1
    inp: torch.Tensor | None = None
    inp_key: str | None = None  # the keyword the first input came by (None: positional)
    args: tuple = ()
    out: torch.Tensor | None = None


def _first(output):
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    if hasattr(output, "last_hidden_state") and not isinstance(output, torch.Tensor):
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


def record(model: nn.Module, layers: dict[str, nn.Module], inputs: dict) -> dict[str, list[Call]]:
    """stack path -> the calls of modules in its `layers[stack]`, in call order."""
    counter = [0]
    calls: dict[str, list[Call]] = {s: [] for s in layers}
    handles = []
    for stack, layer in layers.items():
        for path, module in layer.named_modules():
            open_calls: list[Call] = []

            def pre(mod, args, kwargs, path=path, stack=stack, open_calls=open_calls):
                call = Call(path, mod, counter[0])
                counter[0] += 1
                if args and isinstance(args[0], torch.Tensor):
                    call.inp = args[0].detach().clone()
                else:
                    key = "hidden_states" if isinstance(kwargs.get("hidden_states"), torch.Tensor) else next(
                        (k for k, v in kwargs.items() if isinstance(v, torch.Tensor)), None)
                    call.inp, call.inp_key = (kwargs[key].detach().clone(), key) if key else (None, None)
                call.args = tuple(a.detach().clone() for a in args if isinstance(a, torch.Tensor))
                calls[stack].append(call)
                open_calls.append(call)

            def post(mod, args, kwargs, output, open_calls=open_calls):
                call = open_calls.pop()
                call.end = counter[0]
                counter[0] += 1
                out = _first(output)
                call.out = out.detach().clone() if out is not None else None  # (a layer may add to it in place)

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def _make_probe(base: str):
    def probe(module, query, key, value, attention_mask, *args, **kwargs):
        _SEEN.setdefault(id(module), (module, query, key, value))
        BIASES.update(n for n, v in kwargs.items() if n.endswith("bias") and isinstance(v, torch.Tensor)
                      and v.dim() == 4 and v.shape[-1] == key.shape[2])
        if base != "eager":
            return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, *args, **kwargs)
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, *args, **kwargs)
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~attention_mask, torch.finfo(query.dtype).min)
        return fn(module, query, key, value, attention_mask, *args, **kwargs)
    return probe


def _probe_name(base: str | None) -> str:
    base = base if base in ALL_ATTENTION_FUNCTIONS or base == "eager" else "eager"
    name = f"{PROBE}_{base}"
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_probe(base))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def attention_calls(model: nn.Module, inputs: dict) -> dict:
    """id(module) -> (module, query, key, value) of each module that called the attention registry."""
    configs = {id(c): c for c in (getattr(m, "config", None) for m in model.modules())
               if isinstance(c, PretrainedConfig)}
    saved = {k: c._attn_implementation for k, c in configs.items()}
    _SEEN.clear()
    BIASES.clear()
    try:
        for c in configs.values():
            c._attn_implementation = _probe_name(c._attn_implementation)
        with torch.no_grad():
            model(**inputs)
        return dict(_SEEN)
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved[k]
        _SEEN.clear()
