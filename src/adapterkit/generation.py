"""generate() with per-row adapters: `model.generate(..., adapter_names=[...])` (and per-row `task_ids`).

Each decoding step is one forward of the model, whose hooks route its rows (forward_hooks.py). Three things
generate() does around those forwards need help:
- num_beams / num_return_sequences repeat each input row (`repeat_interleave` of the tensor arguments only):
  the per-row lists are repeated the same way, so every beam and sample keeps its input's adapter. Beam search
  reorders the cache only among one input's beams, so rows and adapters stay aligned.
- an encoder-decoder's encoder runs once, through get_encoder(), outside the model's forward, and is passed
  only the arguments its signature names: the per-row arguments wait on the forward record for the encoder's
  hooks while generate() runs.
- a list of the wrong length is refused before anything runs, counted in input rows (not expanded ones).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .compose.routing import Routing
from .errors import AdapterError
from .forward_hooks import ADAPTER_NAMES, ROW_ARGUMENTS

_INPUTS = ("input_ids", "inputs_embeds", "input_features", "input_values", "pixel_values", "inputs")


def _input_rows(args, kwargs) -> int | None:
    for value in (args[0] if args else None, *(kwargs.get(name) for name in _INPUTS)):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return None


@contextmanager
def per_row_arguments(state, args, kwargs):
    """While generate() runs: check its `adapter_names` against the input rows, and keep the per-row arguments
    for an encoder run outside the model's forward."""
    rows = {key: kwargs[key] for key in ROW_ARGUMENTS if kwargs.get(key) is not None}
    names = rows.get(ADAPTER_NAMES)
    if names is not None:
        batch = _input_rows(args, kwargs)
        if batch is not None and isinstance(names, (list, tuple)) and len(names) != batch:
            raise AdapterError(
                f"generate(adapter_names=...) has {len(names)} entries for {batch} input rows: give one adapter name "
                f"(or None / '__base__') per input row; num_beams and num_return_sequences repeat it for each row's "
                f"beams and samples")
        if batch is None:
            batch = len(names) if isinstance(names, (list, tuple)) else 0
        Routing(state, names, batch, "cpu")  # not a list, unknown names, Parallel: refused before anything runs
    record = state.record
    previous = record.generate_rows, record.generate_routing
    record.generate_rows, record.generate_routing = (rows or None), None
    try:
        yield
    finally:
        record.generate_rows, record.generate_routing = previous


def expand(model_kwargs: dict, expand_size: int) -> dict:
    """Repeat each per-row list `expand_size` times in place, row by row (as transformers repeats tensors)."""
    if expand_size > 1:
        for key in ROW_ARGUMENTS:
            value = model_kwargs.get(key)
            if isinstance(value, (list, tuple)):
                model_kwargs[key] = [entry for entry in value for _ in range(expand_size)]
    return model_kwargs
