"""Prefix tuning: per-layer learned keys/values prepended in attention (Li & Liang, 2021).

Each kind of attention has its own prefix module (its own MLP and layer count), as in `adapters`:
`adapterkit.<name>.shared.prefix` for self-attention, and in encoder-decoder models `shared.prefix_encoder` for the
encoder's self-attention (config `encoder_prefix`) and `shared.prefix_cross` for the decoder's cross-attention
(`cross_prefix`). Optional per-layer gates sit at `layers.<i>.prefix_gate` (`cross_prefix_gate`). Keys/values reach
the model through `attention.py` (a wrapper registered in transformers' attention-function registry) and
the "prefix" attention site (its entries: `PrefixRef`, build.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...nn.activations import activation
from .config import PrefixTuningConfig


class _PrefixBase(nn.Module):
    def __init__(self, layer_ids: list[int], n_heads: int, head_dim: int, config: PrefixTuningConfig):
        super().__init__()
        self.n_layers, self.n_heads, self.head_dim = len(layer_ids), n_heads, head_dim
        self.prefix_length = config.prefix_length
        self.__dict__["shift_positions"] = config.shift_positions  # see AttentionSite.position_shift
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
