"""DeepSpeed ZeRO (2 / 3) with the AdapterTrainer: adapter-only saving.

ZeRO-3 partitions every parameter, adapters included (a parameter's `.data` is empty outside the modules' forward),
so a save gathers the adapter and head parameters alone (`deepspeed.zero.GatheredParameters`) for the length of a
`with` block; ZeRO-2 keeps parameters whole and needs nothing. deepspeed is imported only when there is something to
gather. Building the model under `deepspeed.zero.Init` (ZeRO-3 TrainingArguments created before the model) is not
supported: adding an adapter reads the base weights' shapes, which are empty there; build the model first.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch.nn as nn

from .fsdp import adapter_parameters


@contextmanager
def gathered_zero3_adapters(model: nn.Module):
    """Within the block the adapter and head parameters of a ZeRO-3 model are whole on every rank (read-only);
    every rank must enter. Other models: nothing changes."""
    params = [p for _, _, p in adapter_parameters(model) if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


__all__ = ["gathered_zero3_adapters"]
