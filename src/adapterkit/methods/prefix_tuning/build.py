"""How a prefix-tuning config becomes modules, what each attention site runs for it, and `eject`.

Each kind of attention has its own prefix module (its own MLP and layer count), as in `adapters`:
`shared.prefix` for self-attention, and in encoder-decoder models `shared.prefix_encoder` for the encoder's
self-attention (config `encoder_prefix`) and `shared.prefix_cross` for the decoder's cross-attention
(`cross_prefix`). Optional per-layer gates sit at `layers.<i>.prefix_gate` (`cross_prefix_gate`).
"""

from __future__ import annotations

import torch.nn as nn

from ...errors import AdapterError
from ...interfaces.base import resolve
from ...nn.gating import Gate
from ...registry import members
from .config import PrefixTuningConfig
from .modules import FlatPrefixTuning, PrefixTuning

# attention kind -> (model-level module key, layer site kind, gate location)
GROUPS = {
    "self": ("prefix", "prefix", "prefix_gate"),
    "encoder": ("prefix_encoder", "prefix", "prefix_gate"),
    "cross": ("prefix_cross", "cross_prefix", "cross_prefix_gate"),
}


def attention_shape(config, interface=None) -> tuple[int, int]:
    """(key/value heads, head dim) of a transformers config (or as the interface measured them)."""
    if interface is not None and interface.attention_shape:
        return interface.attention_shape
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    if not heads:
        raise AdapterError(f"{type(config).__name__} has no num_attention_heads (or n_head): prefix tuning needs "
                           "the attention's head count")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    width = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or (width // heads if width else None)
    if not head_dim:  # (SegFormer: stages of several widths, no hidden_size)
        raise AdapterError(f"{type(config).__name__} gives no head dim (head_dim, or hidden_size / heads): prefix "
                           "tuning needs one attention shape" + (interface.why_missing("self_attention") if interface
                                                                else ""))
    return kv_heads, head_dim


def encoder_layer_ids(state) -> set[int]:
    """Ids of the layers in the interface's `encoder_layers` stack (none for single-stack models)."""
    path = state.interface.encoder_layers
    path = path.rstrip("?") if path else None
    return {i for stack, first, count in state.stacks if stack == path for i in range(first, first + count)}


def group_of(state, layer_id: int, site_kind: str) -> str:
    """The attention kind of a layer's prefix site: "cross", "encoder" or "self"."""
    if site_kind == "cross_prefix":
        return "cross"
    return "encoder" if layer_id in encoder_layer_ids(state) else "self"


def group_layers(state, config: PrefixTuningConfig) -> dict[str, list[int]]:
    """Layer ids (not left out) of each attention kind `config` puts prefixes in, as `adapters` counts them."""
    ids = state.layer_ids(config.leave_out)
    encoder = encoder_layer_ids(state)
    groups = {"encoder": [i for i in ids if i in encoder] if config.encoder_prefix else [],
              "self": [i for i in ids if i not in encoder], "cross": []}
    cross = state.interface.cross_attention
    if config.cross_prefix and cross:
        groups["cross"] = [i for i in ids if resolve(state.layers[i], cross) is not None]
    return {group: layer_ids for group, layer_ids in groups.items() if layer_ids}


def prefix_modules(state, name: str) -> list[nn.Module]:
    """The prefix modules of adapter `name`, one per attention kind it has. (No assignment expression in the
    comprehension: it runs on every forward, and torch.compile breaks the graph at one.)"""
    modules = (state.module_at(name, ("model", key)) for key, _, _ in GROUPS.values())
    return [m for m in modules if m is not None]


class PrefixRef:
    """One active prefix at one layer, as the attention site runs it: its module, and the layer's gate (or None).
    The site's protocol: `prefix.key_values(layer_id)`, `prefix.prefix_length`, `prefix.shift_positions`, `gate`."""

    __slots__ = ("prefix", "gate")

    def __init__(self, prefix, gate):
        self.prefix, self.gate = prefix, gate


def site_entry(state, name: str, key: tuple):
    """What the attention site `key` = (layer id, "prefix" / "cross_prefix") runs for adapter `name`."""
    layer_id, kind = key
    prefix_key, _, gate_location = GROUPS[group_of(state, layer_id, kind)]
    prefix = state.module_at(name, ("model", prefix_key))
    if prefix is None or layer_id not in prefix.layer_index:
        return None
    return PrefixRef(prefix, state.module_at(name, (layer_id, gate_location)))


def before_forward(state, names: set[str]) -> None:
    for name in names:
        for module in prefix_modules(state, name):
            if isinstance(module, PrefixTuning):
                module.prefill()


def build(state, name: str, config: PrefixTuningConfig) -> None:
    if not (state.interface.attention_registry or state.interface.own_attention):  # (before reading head counts)
        raise AdapterError(f"prefix tuning cannot attach to {type(state.model).__name__}: its attention does not go "
                           "through transformers' attention-function registry, and its interface declares no "
                           "own_attention (interfaces/base.py OwnAttention) for it"
                           + state.interface.why_missing("attention_registry")
                           + state.interface.why_missing("own_attention"))
    kv_heads, head_dim = attention_shape(state.model.config, state.interface)
    for group, layer_ids in group_layers(state, config).items():
        key, site, gate_location = GROUPS[group]
        if config.flat:
            module = FlatPrefixTuning(layer_ids, kv_heads, head_dim, config)
        else:
            module = PrefixTuning(layer_ids, kv_heads, head_dim, state.hidden_size, config)
        state.add_model_module(name, key, module)
        for layer_id in layer_ids:
            if config.use_gating:
                gate = Gate(state.hidden_size, 1 if config.shared_gating else 2).bind(state, name, layer_id, site)
                state.add_layer_module(name, layer_id, gate_location, gate, site=site)
            else:
                state.ensure_layer_site(layer_id, site)


def eject(state, name: str) -> None:
    """Replace the MLPs of prefix adapter `name` by the flat prefixes they compute (same outputs, fewer params)."""
    if not prefix_modules(state, name):
        raise AdapterError(f"adapter {name!r} has no prefix tuning to eject")
    shared = state.container[name].shared
    module_config = next(m for m in members(state.configs[name]) if isinstance(m, PrefixTuningConfig))
    config = module_config.replace(flat=True)
    for key, _, _ in GROUPS.values():
        module = shared[key] if key in shared else None
        if not isinstance(module, PrefixTuning):
            continue
        flat = FlatPrefixTuning(sorted(module.layer_index, key=module.layer_index.get), module.n_heads,
                                module.head_dim, config)
        flat.control_trans.data = module.flat_values().to(flat.control_trans)
        flat.train(module.training)
        flat.requires_grad_(all(p.requires_grad for p in module.parameters()))
        shared[key] = flat.to(device=module.wte.weight.device, dtype=module.wte.weight.dtype)
    state.replace_member_config(name, module_config, config)
    state.invalidate()
