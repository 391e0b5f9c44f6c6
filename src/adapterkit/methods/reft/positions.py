"""Which positions of a layer's output ReFT edits, from the attention mask of the call (the `adapters` package's
rule): per row, the first `prefix_positions` and the last `suffix_positions` real tokens, counted from the row's
first 1 in the mask (left padding) to its number of 1s.

Positions are absolute in the sequence the mask covers, so a step of generate() with the KV cache (its mask
covers past and new tokens) edits a new token only if it is among the first `prefix_positions`; the suffix, the
last tokens of the input, is the prompt's: it is edited at the prefill, never at a decode step (the package
edits position 0 of every new token, and crashes with a suffix or left padding). With prefix positions only,
generate() therefore equals the uncached greedy loop.

A row shorter than the positions asked for is an error ("positions beyond the input"; the package clamps them
and mixes rows' suffix states up), except in the decoder of an encoder-decoder model, which generate() starts
from one token: there the positions that exist yet are edited (the uncached loop does the same).
"""

from __future__ import annotations

import torch

from ...errors import AdapterError


def _stack_kind(state, layer_id: int) -> str:
    """"encoder" / "decoder" for the stacks of an encoder-decoder model, "single" for one-stack models."""
    encoder = state.interface.encoder_layers
    if not encoder or len(state.stacks) < 2:
        return "single"
    path = encoder.rstrip("?")
    for stack, first, count in state.stacks:
        if first <= layer_id < first + count:
            return "encoder" if stack == path else "decoder"
    return "single"  # pragma: no cover


def _call_kwargs(inputs) -> dict:
    return {} if inputs is None else inputs[1]


def past_length(kwargs: dict) -> int:
    """Tokens already in the KV cache the forward was given (0 without one)."""
    cache = kwargs.get("past_key_values", kwargs.get("cache"))  # transformers 5's generate() passes `cache`
    get = getattr(cache, "get_seq_length", None)
    return int(get()) if callable(get) else 0


def position_masks(site, hidden: torch.Tensor, rows, prefix: int, suffix: int, name: str):
    """(prefix mask, suffix mask or None), each (batch, length, 1) bool, for `hidden` (batch, length, dim)."""
    state = site.state
    record = state.record
    kind = _stack_kind(state, site.layer_id)
    if kind == "encoder":
        kwargs = _call_kwargs(record.encoder_inputs or record.inputs)
        mask, past = kwargs.get("attention_mask"), 0
    else:
        kwargs = _call_kwargs(record.inputs)
        mask = kwargs.get("decoder_attention_mask" if kind == "decoder" else "attention_mask")
        past = record.scratch.get("reft_past", 0)
    batch, length = hidden.shape[0], hidden.shape[1]
    device = hidden.device
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise AdapterError(f"ReFT adapter {name!r} reads its positions from a 2-D attention mask (batch, "
                               f"length); got {getattr(mask, 'shape', type(mask).__name__)}")
        mask = mask.to(device)
        if rows is not None:
            mask = mask[rows]
        total = mask.shape[1]
        start = total - length
        real = mask == 1
        lengths = real.sum(-1, keepdim=True)
        offsets = real.int().argmax(-1, keepdim=True)
    else:
        start = past
        total = start + length
        lengths = torch.full((batch, 1), total, device=device)
        offsets = torch.zeros((batch, 1), dtype=torch.long, device=device)
    if start < 0:
        raise AdapterError(f"ReFT adapter {name!r}: the attention mask covers {total} positions, fewer than the "
                           f"{length} of the layer's input")
    if start == 0 and kind != "decoder" and not torch.compiler.is_compiling():
        shortest = int(lengths.min())
        if shortest < max(prefix, suffix):
            raise AdapterError(
                f"ReFT adapter {name!r} edits the first {prefix} and last {suffix} positions of each input, but a "
                f"row has only {shortest} real tokens (positions beyond the input); use shorter prefix/suffix "
                "positions or longer inputs")
    position = torch.arange(start, start + length, device=device).unsqueeze(0)
    end = offsets + lengths
    prefix_mask = (position >= offsets) & (position < torch.minimum(offsets + prefix, end))
    suffix_mask = None
    if suffix and start == 0:
        suffix_mask = (position >= torch.maximum(end - suffix, offsets)) & (position < end)
        suffix_mask = suffix_mask.unsqueeze(-1)
    return prefix_mask.unsqueeze(-1), suffix_mask
