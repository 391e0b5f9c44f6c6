"""adapterkit's own format: `adapter_config.json` + `adapter.safetensors`.

The config file holds the adapter config (`config.to_dict()`, every field) under "config", plus what is needed to
refuse a wrong model (model_type, hidden_size, num_layers), the adapter name, a format marker and the SHA-256 of
the weights file, so a weights file that does not belong to its config (corrupted, or from an interrupted copy) is
an error rather than a silent mismatch. Weights are `model.adapterkit[name].state_dict()`.
"""

from __future__ import annotations

from pathlib import Path

from ..configs import AdapterConfig
from ..version import __version__
from ..errors import CheckpointError
from .common import CONFIG_NAME, Checkpoint, check_compatible, model_facts, name_from, parse_config
from .files import StagedWrite, read_bytes, read_safetensors, safetensors_bytes, sha256

FORMAT = "adapterkit"
FORMAT_VERSION = 1
WEIGHTS_NAME = "adapter.safetensors"


def is_native(data: dict) -> bool:
    return data.get("format") == FORMAT


def write(model, stage: StagedWrite, name: str) -> None:

    tensors = model.adapterkit[name].state_dict()
    weights = safetensors_bytes(tensors, metadata={"format": "pt", "adapter_name": name})
    config = model.adapter_state.configs[name]
    stage.write_bytes(WEIGHTS_NAME, weights)
    stage.write_json(CONFIG_NAME, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "adapterkit_version": __version__,
        "name": name, **model_facts(model), "config": config.to_dict(),
        "weights": {"file": WEIGHTS_NAME, "sha256": sha256(weights)},
    })


def read(model, directory: Path, data: dict) -> Checkpoint:
    source = directory / CONFIG_NAME
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: format_version {version!r} is not supported by this adapterkit (reads integers 1 to "
            f"{FORMAT_VERSION}){'; upgrade adapterkit' if isinstance(version, int) and version > 1 else ''}"
        )
    check_compatible(model, source, model_type=data.get("model_type"), hidden_size=data.get("hidden_size"),
                     num_layers=data.get("num_layers"))
    if not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{source}: no adapter config (a JSON object under 'config')")
    config = parse_config(source, AdapterConfig.from_dict, data["config"])
    name = name_from(source, data)
    if not name:
        raise CheckpointError(f"{source}: no adapter 'name'")
    weights_file = directory / WEIGHTS_NAME
    raw = read_bytes(weights_file, "weights file")
    record = data.get("weights")
    expected = record.get("sha256") if isinstance(record, dict) else None
    if record is not None and not (isinstance(record, dict) and isinstance(expected, (str, type(None)))):
        raise CheckpointError(f"{source}: 'weights' must be an object {{'file': ..., 'sha256': '<hex digest>'}}, "
                              f"found {record!r}")
    if expected is not None and sha256(raw) != expected:
        raise CheckpointError(
            f"{weights_file}: its contents do not match the SHA-256 recorded in {CONFIG_NAME} "
            f"(corrupted, truncated, or from another save)"
        )
    return Checkpoint(name=name, config=config, tensors=read_safetensors(weights_file, raw), config_file=source,
                      weights_file=weights_file, format=FORMAT)
