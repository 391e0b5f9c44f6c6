"""AdapterHub names of the prompt: the `adapters` package keeps it at
`prompt_tuning.prompt_tunings.<name>.prompt_embedding.weight` (ours: `shared.prompt.prompt_embedding.weight`)."""

from __future__ import annotations

import re
from typing import Any

from ...errors import AdapterConfigError

LAYER_KIND = "prompt_tunings"  # never in a layer: the prompt is model-level only
NEEDS_LOCATION = False


def check_convert(config, interface, what: str) -> None:
    if config.insert_at == "inputs":
        raise AdapterConfigError(
            f"{what}: insert_at='inputs' puts the prompt among the input embeddings (peft's placement); the "
            "`adapters` package puts it after the embedding module (insert_at='embeddings' or None), so its files "
            "cannot hold this adapter; save it as format='adapterkit' or 'peft'")


def config_to_hub(config, out: dict[str, Any]) -> None:
    for field in ("insert_at", "tokenizer_name_or_path"):
        out.pop(field, None)  # adapterkit's fields: the package has one placement and reads the model config
    if config.prompt_init == "sample_vocab":
        out["prompt_init"] = "random_uniform"  # peft's init; the weights are in the file either way


def shared_import(name: str, interface) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(rf"^(?:.*\.)?prompt_tuning\.prompt_tunings\.{re.escape(name)}\.(.+)$"), "shared.prompt.")]


def shared_export(interface) -> dict[str, str]:
    return {"prompt": "prompt_tuning.prompt_tunings.{name}."}


def owns(location: str, interface) -> bool:
    return False


def import_layer(key, layer_id, path, locations, rest, tensor, config, interface, ctx) -> dict:
    raise AdapterConfigError(f"AdapterHub weight {key!r}: prompt tuning has no per-layer weights")


def export_layer(prefix, path, location, param, tensor, name, config, interface):
    raise AdapterConfigError(f"adapter {name!r}: prompt tuning has no per-layer weights ({location!r})")
