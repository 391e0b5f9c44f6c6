"""Build a Hugging Face Hub cache entry offline, in the real cache layout, with huggingface_hub's own functions.

huggingface_hub has no public "add to cache" call; what its downloads do after fetching a file is: store the bytes
under `blobs/<etag>` (the git blob sha1 for a small file, the sha256 for an LFS one), link
`snapshots/<commit>/<path>` to it (`file_download._create_symlink`, pointer path from `_get_pointer_path`), record
the branch (`_cache_commit_hash_for_specific_revision`) and the commit's file listing (`_tree_cache.write_tree_cache`,
which offline `snapshot_download` checks for completeness). These helpers do exactly that, so a later
`snapshot_download(..., local_files_only=True)` / HF_HUB_OFFLINE=1 read finds the files as it would after a download.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
from huggingface_hub.file_download import (_cache_commit_hash_for_specific_revision, _create_symlink,
                                           _get_pointer_path, repo_folder_name)
from huggingface_hub.utils.sha import git_hash

LFS_SUFFIXES = (".safetensors", ".bin")


def cache_repo(cache_dir: str | os.PathLike, repo_id: str, source: str | os.PathLike | dict[str, bytes],
               revision: str = "main", listed_only: dict[str, bytes] | None = None) -> str:
    """Put the files of `source` (a folder, or {repo path: bytes}) into `cache_dir` as repo `repo_id` at
    `revision`; returns the (made-up, deterministic) commit hash. `listed_only`: files the repo's listing holds
    but the cache does not (never downloaded): an offline read that asks for them fails as incomplete."""
    if not isinstance(source, dict):
        root = Path(source)
        source = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                  if p.is_file() and not p.name.startswith(".")}
    storage = Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type=constants.REPO_TYPE_MODEL)
    listing = {**source, **(listed_only or {})}
    commit = hashlib.sha1(repr(sorted((k, git_hash(v)) for k, v in listing.items())).encode()).hexdigest()
    entries = {}
    for path, data in source.items():
        blob_id = git_hash(data)
        lfs = path.endswith(LFS_SUFFIXES)
        etag = hashlib.sha256(data).hexdigest() if lfs else blob_id
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = Path(_get_pointer_path(str(storage), commit, path))
        pointer.parent.mkdir(parents=True, exist_ok=True)
        _create_symlink(str(blob), str(pointer), new_blob=True)
        entries[path] = TreeCacheEntry(size=len(data), blob_id=blob_id, lfs_sha256=etag if lfs else None,
                                       lfs_size=len(data) if lfs else None)
    for path, data in (listed_only or {}).items():
        entries[path] = TreeCacheEntry(size=len(data), blob_id=git_hash(data))
    _cache_commit_hash_for_specific_revision(str(storage), revision, commit)
    write_tree_cache(str(storage), commit, entries)
    return commit
