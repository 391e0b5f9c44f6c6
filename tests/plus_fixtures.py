"""The fixtures of tools/make_plus_fixtures.py (AdapterPlus, AdapterDrop, init_weights_seed; adapters 1.3.0): our
model with a case's adapter under the package's weights, and its inputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

import adapterkit
from adapterkit.io import config_from_adapterhub, state_dict_from_adapterhub

from test_reference_adapters import load_base

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_plus"
ARCHS = ["bert", "roberta"]
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def inputs(arch: str) -> dict:
    return load_file(Path(__file__).parent / "fixtures" / "adapters_ref" / arch / "inputs.safetensors")


def expected(arch: str, case: str) -> dict:
    return load_file(FIXTURES / arch / case / "expected.safetensors")


def package_config(arch: str, case: str):
    return config_from_adapterhub(json.loads((FIXTURES / arch / case / "adapter_config.json").read_text()))


def package_weights(model, arch: str, case: str, name: str, config) -> dict:
    """The case's weights (package names) under our names."""
    return state_dict_from_adapterhub(load_file(FIXTURES / arch / case / "adapter.safetensors"), name,
                                      model.adapter_state.interface, config)


def case_model(arch: str, case: str, config=None):
    """Our model with adapter `case` (its config from the file, or `config`) holding the package's weights."""
    model = adapterkit.init(load_base(arch))
    config = package_config(arch, case) if config is None else config
    model.add_adapter(case, config=config)
    weights = package_weights(model, arch, case, case, config)
    ours = model.adapterkit[case].state_dict()
    assert set(weights) == set(ours), set(weights) ^ set(ours)
    model.adapterkit[case].load_state_dict(weights)
    model.set_active_adapters(case)
    return model


def run(model, arch: str, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(arch), **kwargs).last_hidden_state
