"""The "prefix" site kinds: an attention module's prefix site, through transformers' attention registry
(attention.py) or, where the model's attention computes its scores itself, through hooks (own_attention.py)."""

from __future__ import annotations

from ..errors import AdapterError
from ..interfaces.base import resolve
from .attention import AttentionSite
from .base import Site, register_site_kind
from .own_attention import own_attention_site


def _prefix_site(state, key, target) -> Site:
    field = "cross_attention" if key[1] == "cross_prefix" else "self_attention"
    path = getattr(state.interface, field)
    module = resolve(state.layers[key[0]], path) if path else None
    own = state.interface.own_attention
    if module is None or not (state.interface.attention_registry or own):
        raise AdapterError(
            f"prefix tuning cannot attach to layer {key[0]} of {type(state.model).__name__}: "
            + (f"its interface names no {field} module there{state.interface.why_missing(field)}" if module is None
               else "its attention does not go through transformers' attention-function registry, and its interface "
               "declares no own_attention (interfaces/base.py OwnAttention) for it"
               + state.interface.why_missing("attention_registry")
               + state.interface.why_missing("own_attention"))
        )
    if state.interface.attention_registry or own.paths and _alternative(state.layers[key[0]], path) not in own.paths:
        return AttentionSite(state, key, module)  # (a stack whose attention calls the registry)
    return own_attention_site(state, key, module, own)


def _alternative(layer, path: str) -> str | None:
    """The alternative of `a|b` that exists in `layer`."""
    return next((a for a in path.rstrip("?").split("|") if resolve(layer, a) is not None), None)


register_site_kind("prefix", _prefix_site, per_kind=True)  # self-attention
register_site_kind("cross_prefix", _prefix_site, per_kind=True)  # the decoder's cross-attention
