"""What every checkpoint format shares: the parsed checkpoint, model compatibility checks, module paths."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..configs import AdapterConfig
from ..errors import AdapterConfigError, AdapterError, CheckpointError
from ..interfaces.base import FusedSlice, ModelInterface, resolve
from ..nn.experts import experts_parameter

CONFIG_NAME = "adapter_config.json"


@dataclass
class Checkpoint:
    """An adapter read from disk and converted to adapterkit's terms, not yet on any model."""

    name: str                           # the name stored in the checkpoint
    config: AdapterConfig
    tensors: dict[str, torch.Tensor]    # keys of `model.adapterkit[name].state_dict()`
    config_file: Path
    weights_file: Path
    format: str


def model_facts(model: nn.Module) -> dict[str, Any]:
    """The facts a checkpoint records about the model it was made for."""
    state = model.adapter_state
    return {
        "model_type": getattr(model.config, "model_type", None),
        "hidden_size": state.hidden_size,
        "num_layers": len(state.layers),
        "model_class": type(model).__name__,  # init() keeps the class name
    }


def check_compatible(model: nn.Module, source: Path, **recorded: Any) -> None:
    """The checkpoint's recorded model facts (model_type, hidden_size, num_layers) must match this model's."""
    facts = model_facts(model)
    for key in ("model_type", "hidden_size", "num_layers"):
        value = recorded.get(key)
        if value is not None and value != facts[key]:
            raise CheckpointError(
                f"{source}: the adapter was made for a model with {key}={value!r}, but this model has "
                f"{key}={facts[key]!r}; load it into a {value!r}-{key} model"
                if key != "model_type" else
                f"{source}: the adapter was made for model_type {value!r} (another architecture), but this model is "
                f"{facts[key]!r}; adapters do not transfer between architectures"
            )


# what a reader raises on input of the wrong type or shape (a JSON value of the wrong type, a tensor of the wrong rank)
_MALFORMED = (TypeError, AttributeError, KeyError, IndexError, RuntimeError, ValueError, OverflowError)


@contextmanager
def reading(source: Path):
    """Readers and converters check what they can; whatever they did not foresee in a malformed file still ends as a
    CheckpointError naming it (never a bare TypeError / RuntimeError), so a loader only ever raises AdapterError."""
    try:
        yield
    except AdapterError:
        raise
    except _MALFORMED as e:
        raise CheckpointError(f"{source}: malformed checkpoint ({type(e).__name__}: {e})") from None


def parse_config(source: Path, make, data, what: str = "adapter config"):
    """Run a config converter, turning its validation errors into a CheckpointError naming the file."""
    try:
        return make(data)
    except (AdapterConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid {what}: {e}") from None


def linear_paths(interface: ModelInterface) -> dict[str, str]:
    """Layer-relative path of every plain projection LoRA / (IA)^3 can target -> adapterkit location key.

    Slices of fused projections (GPT-2's c_attn) have no per-part name in these formats and are left out.
    """
    out = {}
    for location, spec in interface.linear_locations(attn_matrices=("q", "k", "v", "o"), intermediate=True,
                                                     output=True):
        if isinstance(spec, str):
            for path in spec.rstrip("?").split("|"):
                out[path] = location
    return out


def layer_projections(state) -> list[dict[str, str]]:
    """Per layer: the name (within the layer) of each plain projection LoRA / (IA)^3 can target -> its location.

    Concrete names: alternatives resolved (T5's `wi` or `wi_0`) and indices from the end made positive (T5's
    `layer.-1` is `layer.1` in an encoder block, `layer.2` in a decoder block). Slices of fused projections (GPT-2's
    c_attn) have no name of their own and are left out."""
    out = []
    for layer in state.layers:
        names = {id(module): name for name, module in layer.named_modules()}
        table = {}
        for location, spec in state.interface.all_linear_locations():
            module = None if isinstance(spec, FusedSlice) else resolve(layer, spec)
            if module is not None:
                table[names[id(module)]] = location
            elif not isinstance(spec, FusedSlice):  # a fused experts weight: "<module>.<parameter>"
                param = experts_parameter(layer, spec)
                if param is not None:
                    table[f"{names[id(param[0])]}.{param[1]}"] = location
        out.append(table)
    return out


def layer_fused_parts(state) -> list[dict[str, list]]:
    """Per layer: the name (within the layer) of each fused projection (GPT-2's c_attn) -> [(location, Projection)]
    of its parts, in the interface's order."""
    out: list[dict[str, list]] = [{} for _ in state.layers]
    names = [{id(module): name for name, module in layer.named_modules()} for layer in state.layers]
    fused = [(loc, spec) for loc, spec in state.interface.all_linear_locations() if isinstance(spec, FusedSlice)]
    for layer_id, location, projection in (state.projections(fused) if fused else []):
        out[layer_id].setdefault(names[layer_id][id(projection.module)], []).append((location, projection))
    return out


def layer_prefixes(state) -> list[str]:
    """Each layer's name relative to the base model: "<stack path>.<index in its stack>"."""
    return [f"{path}.{i - first}" for path, first, count in state.stacks for i in range(first, first + count)]


def single_stack(interface: ModelInterface, what: str) -> str:
    """The one layer list of an encoder-only / decoder-only interface (these formats name one stack)."""
    if len(interface.layers) != 1:
        raise AdapterConfigError(
            f"{what} for models with several layer stacks ({', '.join(interface.layers)}) is not supported yet; "
            "use the adapterkit format"
        )
    return interface.layers[0].rstrip("?")


def base_prefix(model: nn.Module) -> str:
    """Where the base model sits in `model` ("bert." for BertForSequenceClassification, "" for BertModel)."""
    base = model.adapter_state.base
    if base is model:
        return ""
    for name, module in model.named_modules():
        if module is base:
            return name + "."
    return ""  # pragma: no cover - base is always a submodule


def name_from(source: Path, data: Mapping[str, Any]) -> str | None:
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise CheckpointError(f"{source}: 'name' must be a string, found {name!r}")
    return name
