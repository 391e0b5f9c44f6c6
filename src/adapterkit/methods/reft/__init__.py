"""ReFT (Wu et al., 2024; the `adapters` package's LoReFT / NoReFT / DiReFT): low-rank interventions on the
hidden states a layer outputs, at a few prefix and suffix positions. One folder: configs, modules, positions,
AdapterHub weight names and the spec below. Not mergeable (the edit depends on the position)."""

from __future__ import annotations

import torch

from ...blocks import BatchSplit, Parallel, Stack
from ...errors import AdapterError
from ...registry import MethodSpec, member_of, register_method
from . import adapterhub
from .config import DiReftConfig, LoReftConfig, NoReftConfig, ReftConfig
from .modules import ReftModule, ReftUnit
from .positions import past_length

LOCATION = "reft"


def build(state, name: str, config: ReftConfig) -> None:
    dim = state.hidden_size
    if config.r > dim:
        raise AdapterError(f"ReFT adapter {name!r}: r={config.r} exceeds the hidden size {dim} (r orthonormal "
                           f"directions of a {dim}-dimensional state); use r <= {dim}")
    n_layers = len(state.layers)
    layer_ids = list(range(n_layers)) if config.layers == "all" else list(config.layers)
    beyond = [i for i in layer_ids if i >= n_layers]
    if beyond:
        raise AdapterError(f"ReFT adapter {name!r}: layers {beyond} do not exist; the model has layers "
                           f"0..{n_layers - 1}")
    for layer_id in layer_ids:
        state.add_layer_module(name, layer_id, LOCATION, ReftModule(dim, config, name), site="layer_output")
        if config.dtype is not None:  # the interventions' own dtype, not the model's
            state.module_at(name, (layer_id, LOCATION)).to(dtype=getattr(torch, config.dtype))


def before_forward(state, names: set[str]) -> None:
    """The KV cache's length before this forward's layers fill it (decode steps without an attention mask)."""
    if any(member_of(state.configs[n], "reft") is not None for n in names if n in state.configs):
        inputs = state.record.inputs
        state.record.scratch["reft_past"] = past_length(inputs[1]) if inputs is not None else 0


SPEC = register_method(MethodSpec(
    name="reft", label="ReFT", config=ReftConfig, build=build, before_forward=before_forward,
    config_names={"loreft": LoReftConfig(), "noreft": NoReftConfig(), "direft": DiReftConfig()},
    blocks=(Stack, BatchSplit, Parallel), formats={"adapterhub": adapterhub},
    exports={"ReftConfig": ReftConfig, "LoReftConfig": LoReftConfig, "NoReftConfig": NoReftConfig,
             "DiReftConfig": DiReftConfig},
))

__all__ = ["SPEC", "ReftConfig", "LoReftConfig", "NoReftConfig", "DiReftConfig", "ReftModule", "ReftUnit"]
