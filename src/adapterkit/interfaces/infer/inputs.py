"""A tiny input for any transformers model, from its `main_input_name` and config (the check forward's input)."""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from ...errors import AdapterError


def _sub(config, name, first=()):
    """`name` from the config, or from the first sub-config that has it (an EncoderDecoderConfig's `encoder` /
    `decoder` hold the sizes; `first`: the sub-configs to look in before the others)."""
    for key in (*first, "vision_config", "audio_config", "encoder_config", "text_config", "encoder", "decoder"):
        sub = getattr(config, key, None)
        if sub is not None and getattr(sub, name, None) is not None:
            return getattr(sub, name)
    return getattr(config, name, None)


def _int(value, default):
    if isinstance(value, (list, tuple)):
        value = value[0]
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def dummy_inputs(model: nn.Module, batch: int = 1, seq: int = 6) -> dict:
    """Keyword inputs for one forward of `model` (token ids, pixels or audio features)."""
    config = model.config
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    g = torch.Generator().manual_seed(0)
    name = getattr(model, "main_input_name", "input_ids")
    accepted = inspect.signature(model.forward).parameters
    out: dict = {}
    if name == "input_ids":
        vocab = _int(_sub(config, "vocab_size"), 100)
        out["input_ids"] = torch.randint(3, max(4, min(vocab, 90)), (batch, seq), generator=g)
        if "attention_mask" in accepted:
            out["attention_mask"] = torch.ones(batch, seq, dtype=torch.long)
        if "pixel_values" in accepted and getattr(config, "vision_config", None) is not None:  # a two-tower model
            size = _int(_sub(config, "image_size"), 32)
            out["pixel_values"] = torch.randn(batch, _int(_sub(config, "num_channels"), 3), size, size, generator=g)
    elif name == "pixel_values":
        size = _int(_sub(config, "image_size"), 32)
        channels = _int(_sub(config, "num_channels"), 3)
        out["pixel_values"] = torch.randn(batch, channels, size, size, generator=g)
    elif name == "input_features":
        mels = _int(_sub(config, "num_mel_bins"), None) or _int(_sub(config, "feature_size"), 80)
        length = 2 * _int(_sub(config, "max_source_positions"), 16)
        out["input_features"] = torch.randn(batch, mels, length, generator=g)
    elif name == "input_values":
        out["input_values"] = torch.randn(batch, 1600, generator=g)
    else:
        raise AdapterError(f"cannot make an example input {name!r} for {type(model).__name__}")
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in accepted:
        vocab = _int(_sub(config, "vocab_size", first=("decoder",)), 100)
        out["decoder_input_ids"] = torch.randint(3, max(4, min(vocab, 90)), (batch, 4), generator=g)
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in out.items()}
