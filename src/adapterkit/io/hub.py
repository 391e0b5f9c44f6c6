"""Adapters on the Hugging Face Hub: a repo id ("org/name") becomes a local snapshot folder, via huggingface_hub.

Everything goes through `huggingface_hub.snapshot_download`, so its cache, `HF_HUB_OFFLINE`, `HF_HUB_CACHE`,
tokens and endpoints apply as for transformers. Only an adapter directory's own files are fetched
(`allow_patterns`), never a repo's other files (a base model's weights in the same repo, images, ...).
An existing local directory always wins over a repo of the same name (as in transformers and `adapters`).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import AdapterError
from . import native, peft
from .adapterhub import directory as adapterhub_directory
from .common import CONFIG_NAME
from .fusion import CONFIG_NAME as FUSION_CONFIG_NAME
from .fusion import WEIGHTS_NAME as FUSION_WEIGHTS_NAME

# The files any adapter directory (adapterkit, AdapterHub or PEFT layout) may hold; heads add theirs.
ADAPTER_FILES = tuple(dict.fromkeys((CONFIG_NAME, native.WEIGHTS_NAME, adapterhub_directory.WEIGHTS_NAME,
                                     adapterhub_directory.SAFE_WEIGHTS_NAME, peft.SAFE_WEIGHTS_NAME,
                                     peft.WEIGHTS_NAME)))
FUSION_FILES = (FUSION_CONFIG_NAME, FUSION_WEIGHTS_NAME, "model_adapter_fusion.safetensors",
                "pytorch_model_adapter_fusion.bin")
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "subfolder")


def resolve_path(path_or_repo, files: Iterable[str] = ADAPTER_FILES, nested: bool = False, **options) -> Path:
    """`resolve` for the public load_* calls: their extra keyword arguments are the Hub options, checked here."""
    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if unknown:
        raise AdapterError(f"unknown argument(s) {', '.join(unknown)}; the Hub options are {', '.join(HUB_OPTIONS)}")
    return resolve(path_or_repo, files, nested=nested, **options)


def folder_name(path_or_repo, subfolder: str | None = None) -> str | None:
    """What a PEFT checkpoint is named after (its folder's name) when it comes from a repo: the snapshot folder is
    a commit hash, so the repo's (or subfolder's) last part instead; None for a local directory."""
    if not is_repo_id(path_or_repo):
        return None
    return (subfolder or path_or_repo).rstrip("/").split("/")[-1]


def is_repo_id(value) -> bool:
    """True for a string huggingface_hub accepts as a repo id ("name" or "org/name") that is not a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    if not isinstance(value, str) or os.path.exists(value):
        return False
    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def resolve(path_or_repo, files: Iterable[str] = ADAPTER_FILES, *, subfolder: str | None = None,
            revision: str | None = None, cache_dir=None, token=None, local_files_only: bool = False,
            nested: bool = False) -> Path:
    """A local directory holding the adapter: `path_or_repo` itself if it is a directory (or not a repo id: the
    caller's own error then names it), else the snapshot of the Hub repo with only `files` fetched (under
    `subfolder`, and with `nested` one folder level below too: a saved adapter setup)."""
    if not is_repo_id(path_or_repo):
        if subfolder:
            return Path(path_or_repo) / _check_subfolder(subfolder)
        return Path(path_or_repo)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    prefix = _check_subfolder(subfolder) + "/" if subfolder else ""
    patterns = [prefix + name for name in files] + ([prefix + "*/" + name for name in files] if nested else [])
    repo = path_or_repo
    where = f"{repo!r}" + (f" (revision {revision!r})" if revision else "")
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        raise not_cached(repo, revision, cache_dir, local_files_only) from None
    except GatedRepoError as e:
        raise AdapterError(f"{where}: the repository is gated; accept its terms and pass a token ({e})") from None
    except RevisionNotFoundError:
        raise AdapterError(f"{where}: no such revision on the Hub") from None
    except RepositoryNotFoundError:
        raise AdapterError(f"{where} is not a local directory and no such repository is on the Hub (or it is "
                           "private: pass token=...)") from None
    except EntryNotFoundError as e:
        raise AdapterError(f"{where}: holds no adapter files ({e})") from None
    folder = Path(folder) / prefix if prefix else Path(folder)
    return folder


def not_cached(repo: str, revision: str | None = None, cache_dir=None, local_files_only: bool = False) -> AdapterError:
    """The error for a repo that may not be downloaded (offline / local_files_only) and is not in the cache."""
    from huggingface_hub import constants
    cache = cache_dir or constants.HF_HUB_CACHE
    why = ("local_files_only=True" if local_files_only else
           "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "the Hub could not be reached")
    where = f"{repo!r}" + (f" (revision {revision!r})" if revision else "")
    return AdapterError(
        f"{where} is not a local directory and not in the Hugging Face cache ({cache}); {why}, so it was not "
        f"downloaded. Download it first (`hf download {repo}` where the Hub is reachable"
        + (", into the same cache_dir" if cache_dir else "")
        + "), or allow downloads (HF_HUB_OFFLINE=0, local_files_only=False)")


def may_not_download(local_files_only: bool = False) -> bool:
    from huggingface_hub import constants
    return bool(local_files_only) or constants.is_offline_mode()


def _check_subfolder(subfolder: str) -> str:
    """A relative POSIX path inside the repo: never absolute, never `..` (names from outside stay inside)."""
    parts = PurePosixPath(subfolder).parts if isinstance(subfolder, str) else ()
    if not parts or subfolder.startswith("/") or "\\" in subfolder or any(p in ("..", ".") for p in parts):
        raise AdapterError(f"subfolder {subfolder!r}: expected a relative folder inside the repo (no '..', not "
                           "absolute)")
    return "/".join(parts)
