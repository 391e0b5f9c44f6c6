"""Attention-function wrappers registered in transformers' `AttentionInterface` (its extension point).

Prefix tuning needs extra keys/values and a longer mask inside every attention call. A model with a prefix
adapter is switched to `adapterkit_<impl>` (e.g. `adapterkit_sdpa`), a registered function that asks the
attention module's `PrefixSite` (if any) to extend key, value and mask, then calls the original `<impl>`.
The matching mask function is registered under the same name, so transformers builds the masks it always does.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from .errors import AdapterError

PREFIX = "adapterkit_"
SITE_ATTR = "_adapterkit_prefix"


def _base_function(base: str, module) -> Callable:
    if base == "eager":  # not in the registry: each modeling file defines its own eager function
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise AdapterError(
                f"{type(module).__name__} has no module-level eager_attention_forward; use attn_implementation='sdpa'"
            )
        return fn
    return ALL_ATTENTION_FUNCTIONS[base]


def _make_wrapper(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        site = module.__dict__.get(SITE_ATTR)
        if site is not None:
            k_len = key.shape[2]
            key, value, attention_mask = site.extend(module, query, key, value, attention_mask)
            for name in site.state.interface.attention_bias_kwargs:  # e.g. T5's position_bias: none for prefixes
                bias = kwargs.get(name)
                if bias is not None and key.shape[2] > k_len and bias.shape[-1] == k_len:
                    kwargs[name] = torch.cat([bias.new_zeros(*bias.shape[:-1], key.shape[2] - k_len), bias], dim=-1)
            if base == "eager" and attention_mask is not None and attention_mask.dtype == torch.bool:
                attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                    ~attention_mask, torch.finfo(query.dtype).min)
        return _base_function(base, module)(module, query, key, value, attention_mask, *args, **kwargs)

    attention.__name__ = f"{PREFIX}{base}"
    return attention


def wrapped_implementation(base: str | None) -> str:
    """Register (once) and return the name of the wrapper around attention implementation `base`."""
    base = base or "eager"
    if base.startswith(PREFIX):
        return base
    if base != "eager" and base not in ALL_ATTENTION_FUNCTIONS:
        raise AdapterError(f"unknown attention implementation {base!r}")
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_wrapper(base))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def unwrapped_implementation(name: str | None) -> str | None:
    return name[len(PREFIX):] if name and name.startswith(PREFIX) else name
