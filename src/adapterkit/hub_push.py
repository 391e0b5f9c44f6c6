"""`push_adapter_to_hub`: stage an adapter's files plus a model card in a local folder, then upload it.

The folder is written exactly as `save_adapter` writes a directory (one atomic commit), plus README.md: YAML
metadata (huggingface_hub's `ModelCardData`), the base model, the adapter config, training metrics when given, and
a usage snippet. The upload goes through huggingface_hub (`HfApi.create_repo` + `HfApi.upload_folder`), so its
token, endpoint (HF_ENDPOINT) and HF_HUB_OFFLINE apply; only the files of this save are uploaded.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from .errors import AdapterError
from .io.staging import one_commit

CARD_NAME = "README.md"


def adapter_card(model, adapter_name: str, repo_id: str, *, datasets_tag: str | None = None,
                 metrics: Mapping[str, Any] | None = None, tags: list[str] | None = None,
                 language: str | None = None, license: str | None = None, description: str | None = None) -> str:
    """The README.md text of an adapter repo."""
    from huggingface_hub import ModelCardData
    config = model.adapter_state.configs[adapter_name]
    base = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None) or None
    model_type = getattr(model.config, "model_type", None)
    head = model.heads[adapter_name].config if adapter_name in getattr(model, "heads", {}) else None
    all_tags = ["adapterkit", "adapter-transformers", config.method] + ([model_type] if model_type else []) \
        + list(tags or [])
    data = ModelCardData(base_model=base, library_name="adapterkit", tags=list(dict.fromkeys(all_tags)),
                         datasets=[datasets_tag] if datasets_tag else None, language=language, license=license,
                         metrics=sorted(metrics) if metrics else None)
    loader = "adapterkit.AutoAdapterModel" if head is not None else "transformers.AutoModel"
    lines = ["---", data.to_yaml(), "---", "", f"# Adapter `{repo_id}`", "",
             description or (f"A {config.method} adapter for `{base or model_type}`"
                             + (f" trained on {datasets_tag}" if datasets_tag else "")
                             + (f", with a {head['head_type']} head" if head else "") + "."), "",
             "## Base model", "", f"`{base}`" if base else f"not recorded (a `{model_type}` model)", "",
             "## Usage", "", "```python", "import adapterkit"]
    if head is not None:
        lines += [f"model = adapterkit.AutoAdapterModel.from_pretrained({base or '<base model>'!r})"]
    else:
        lines += ["from transformers import AutoModel", "",
                  f"model = adapterkit.init(AutoModel.from_pretrained({base or '<base model>'!r}))"]
    lines += [f"name = model.load_adapter({repo_id!r}, set_active=True)", "```", "",
              f"(`{loader}`; the adapter's files are fetched through huggingface_hub.)", "",
              "## Adapter config", "", "```json", json.dumps(config.to_dict(), indent=2, sort_keys=True), "```"]
    if head is not None:
        lines += ["", "## Prediction head", "", "```json", json.dumps(head, indent=2, sort_keys=True), "```"]
    if metrics:
        lines += ["", "## Training metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_value(value)} |" for key, value in metrics.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def stage_adapter(model, folder: str | os.PathLike, adapter_name: str, repo_id: str, *, format: str = "adapterkit",
                  overwrite_adapter_card: bool = False, **card) -> list[str]:
    """Write the adapter (as `model.save_adapter`) and its card into `folder` in one commit; returns the names of
    the files of this save. An existing README.md is kept unless `overwrite_adapter_card`."""
    folder = Path(folder)
    model.adapter_state.require(adapter_name)
    had_card = (folder / CARD_NAME).is_file()
    with one_commit(folder) as stage:
        model.save_adapter(folder, adapter_name, format=format)
        if overwrite_adapter_card or not had_card:
            stage.write_bytes(CARD_NAME, adapter_card(model, adapter_name, repo_id, **card).encode("utf-8"))
        names = stage.staged_names()
    return sorted(set(names) | ({CARD_NAME} if had_card else set()))


def push_adapter_to_hub(model, repo_id: str, adapter_name: str, *, datasets_tag: str | None = None,
                        local_path: str | os.PathLike | None = None, commit_message: str | None = None,
                        private: bool | None = None, token: str | bool | None = None,
                        overwrite_adapter_card: bool = False, create_pr: bool = False, revision: str | None = None,
                        commit_description: str | None = None, adapter_card_kwargs: dict | None = None,
                        metrics: Mapping[str, Any] | None = None, format: str = "adapterkit",
                        endpoint: str | None = None):
    """Stage (in `local_path`, else a temp folder) and upload; returns huggingface_hub's CommitInfo."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled
    card = dict(adapter_card_kwargs or {})
    unknown = sorted(set(card) - {"tags", "language", "license", "description"})
    if unknown:
        raise AdapterError(f"unknown adapter_card_kwargs {', '.join(unknown)}; allowed: tags, language, license, "
                           "description")
    with tempfile.TemporaryDirectory(prefix="adapterkit-push-") as tmp:
        folder = Path(local_path) if local_path is not None else Path(tmp)
        files = stage_adapter(model, folder, adapter_name, repo_id, format=format,
                              overwrite_adapter_card=overwrite_adapter_card, datasets_tag=datasets_tag,
                              metrics=metrics, **card)
        api = HfApi(endpoint=endpoint, token=token)
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(repo_id=repo.repo_id, folder_path=folder, allow_patterns=files,
                                     commit_message=commit_message or f"Upload adapter {adapter_name}",
                                     commit_description=commit_description, revision=revision, create_pr=create_pr)
        except OfflineModeIsEnabled:
            raise AdapterError(f"cannot push {adapter_name!r} to {repo_id!r}: HF_HUB_OFFLINE is set; the files are "
                               f"staged in {folder if local_path is not None else 'a temp folder (pass local_path=)'}"
                               "; unset HF_HUB_OFFLINE to upload") from None
