"""Prefix tuning: per-layer learned keys/values prepended in attention (Li & Liang, 2021).

Each kind of attention has its own prefix module (its own MLP and layer count), as in `adapters`:
`adapterkit.<name>.shared.prefix` for self-attention, and in encoder-decoder models `shared.prefix_encoder` for the
encoder's self-attention (config `encoder_prefix`) and `shared.prefix_cross` for the decoder's cross-attention
(`cross_prefix`). Optional per-layer gates sit at `layers.<i>.prefix_gate` (`cross_prefix_gate`). Keys/values reach
the model through `attention.py` (a wrapper registered in transformers' attention-function registry) and
`sites.PrefixSite`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..configs.prefix_tuning import PrefixTuningConfig
from ..interfaces.base import resolve
from .base import Method, register_method
from .bottleneck import activation
from .gating import Gate


class _PrefixBase(nn.Module):
    def __init__(self, layer_ids: list[int], n_heads: int, head_dim: int, config: PrefixTuningConfig):
        super().__init__()
        self.n_layers, self.n_heads, self.head_dim = len(layer_ids), n_heads, head_dim
        self.prefix_length = config.prefix_length
        self.__dict__["shift_positions"] = config.shift_positions  # see PrefixSite.position_shift
        # layer id -> row block of this layer's keys/values (layers left out get none)
        self.__dict__["layer_index"] = {layer_id: i for i, layer_id in enumerate(layer_ids)}
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def _split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, 2*H*hd) -> keys, values, each (H, P, hd)."""
        kv = self.dropout(rows).view(self.prefix_length, 2, self.n_heads, self.head_dim).permute(1, 2, 0, 3)
        return kv[0], kv[1]


class PrefixTuning(_PrefixBase):
    """MLP reparametrisation: `Embedding(P, d) -> Linear(d, b) -> act -> Linear(b, n_layers*2*H*hd)`."""

    def __init__(self, layer_ids, n_heads, head_dim, hidden_size, config: PrefixTuningConfig):
        super().__init__(layer_ids, n_heads, head_dim, config)
        self.wte = nn.Embedding(config.prefix_length, hidden_size)
        self.control_trans = nn.Sequential(
            nn.Linear(hidden_size, config.bottleneck_size),
            activation(config.non_linearity),
            nn.Linear(config.bottleneck_size, self.n_layers * 2 * n_heads * head_dim),
        )

    def key_values(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's keys and values: its block of the MLP output `prefill` computed for this forward, or, when
        there is none (torch.compile tracing, a submodule called on its own), only its own rows."""
        block = 2 * self.n_heads * self.head_dim
        i = self.layer_index[layer_id]
        cached = None if torch.compiler.is_compiling() else self._valid_cache()
        if cached is not None:
            rows, pieces = cached
            if pieces is not None:
                return pieces[2 * i], pieces[2 * i + 1]
            return self._split(rows[:, i * block:(i + 1) * block])
        hidden = self.control_trans[1](self.control_trans[0](self.wte.weight))
        last = self.control_trans[2]
        rows = F.linear(hidden, last.weight[i * block:(i + 1) * block], last.bias[i * block:(i + 1) * block])
        return self._split(rows)

    def prefill(self) -> None:
        """Compute the MLP output of every layer, (P, n_layers * 2 * H * hd), unless the last one is still valid.

        Called by the model-level pre-forward hook (forward_hooks.py), so outside any layer: a layer never computes
        it, which keeps what a (non-reentrant) checkpointed layer saves the same in its forward and its recompute.
        Every layer of a forward, and `generate()`'s steps, then take their block of it: 2 * n_layers fewer small
        ops and autograd nodes per step, what a GPU step at small batches is bound by. It is reused only while
        nothing it depends on changed: the parameters (storage and version: an optimizer step or a load bumps
        them), the grad / inference mode, and, with a graph, only until a backward has reached it (a hook marks
        it used up), so gradient accumulation and a forward after a backward get a fresh one; under reentrant
        checkpointing (no grad in the first pass) layers compute their own rows as before.
        """
        if torch.compiler.is_compiling() or self._valid_cache() is not None:
            return
        rows = self.control_trans(self.wte.weight)
        pieces = None
        if isinstance(self.dropout, nn.Identity):
            # every layer's keys and values as views of `rows` made by one unbind: in the backward one node stacks
            # their gradients, where per-layer slices and selects would each scatter theirs into a zero-filled
            # tensor of the whole output and sum those (3 * n_layers kernels and n_layers full-size adds)
            pieces = rows.view(self.prefix_length, 2 * self.n_layers, self.n_heads, self.head_dim).permute(
                1, 2, 0, 3).unbind(0)
        entry = [self._cache_key(), rows, False, pieces]  # [key, rows, used up by a backward, per-layer k/v]
        if rows.requires_grad:
            def used_up(grad, entry=entry):
                entry[2] = True
            rows.register_hook(used_up)
        self.__dict__["_rows_cache"] = entry

    def _cache_key(self) -> tuple:
        params = (self.wte.weight, *self.control_trans.parameters())
        return (torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                tuple((p.data_ptr(), p._version, p.requires_grad) for p in params))

    def _valid_cache(self) -> tuple | None:
        """(rows, per-layer k/v views or None) of the last `prefill`, if still valid."""
        cached = self.__dict__.get("_rows_cache")
        if cached is None or cached[2] or cached[0] != self._cache_key():
            return None
        return cached[1], cached[3]

    def __getstate__(self):  # copy.deepcopy / pickle: the cached output (a graph's tensor) is not state
        state = super().__getstate__()
        state.pop("_rows_cache", None)
        return state

    @torch.no_grad()
    def flat_values(self) -> torch.Tensor:
        """All prefixes as the flat parameter of `FlatPrefixTuning` (P-major)."""
        return self.control_trans(self.wte.weight).reshape(-1)


class FlatPrefixTuning(_PrefixBase):
    """The prefixes as one parameter, shaped (P * n_layers * 2 * H * hd)."""

    def __init__(self, layer_ids, n_heads, head_dim, config: PrefixTuningConfig):
        super().__init__(layer_ids, n_heads, head_dim, config)
        self.control_trans = nn.Parameter(torch.randn(config.prefix_length * self.n_layers * 2 * n_heads * head_dim))

    def key_values(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.layer_index[layer_id]
        block = self.control_trans.view(self.prefix_length, self.n_layers * 2, self.n_heads * self.head_dim)
        return self._split(block[:, 2 * i:2 * i + 2].reshape(self.prefix_length, -1))


def attention_shape(config) -> tuple[int, int]:
    """(key/value heads, head dim) of a transformers config."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or config.hidden_size // heads
    return kv_heads, head_dim


# attention kind -> (model-level module key, layer site kind, gate location)
GROUPS = {
    "self": ("prefix", "prefix", "prefix_gate"),
    "encoder": ("prefix_encoder", "prefix", "prefix_gate"),
    "cross": ("prefix_cross", "cross_prefix", "cross_prefix_gate"),
}


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


class PrefixTuningMethod(Method):
    architecture = "prefix_tuning"

    def before_forward(self, state, names: set[str]) -> None:
        for name in names:
            for module in prefix_modules(state, name):
                if isinstance(module, PrefixTuning):
                    module.prefill()

    def build(self, state, name, config: PrefixTuningConfig) -> None:
        kv_heads, head_dim = attention_shape(state.model.config)
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
    shared = state.container[name].shared
    module_config = next(m for m in _members(state.configs[name]) if isinstance(m, PrefixTuningConfig))
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


def _members(config):
    return list(config) if getattr(config, "architecture", "") == "union" else [config]


register_method(PrefixTuningMethod())
