"""Rows of a data source through HF `datasets`: a CSV / TSV / JSON / JSONL / Parquet / text file, a
`save_to_disk` folder, or a Hub dataset id that the local cache holds (never downloaded).

Files are read *streaming*, so `--max-train-samples N` reads only the first N rows of a large file (QQP, MNLI)
and no Arrow cache is written. Every failure is a `DataError` with one line naming the source and the problem.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from .errors import DataError

BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
            ".txt": "text", ".conll": "text"}
SPLIT_ALIASES = {"train": ("train",), "dev": ("validation", "dev", "valid", "test")}


def _datasets():
    import logging
    import os
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read at import: the command never downloads data
    import datasets
    datasets.utils.logging.set_verbosity(logging.CRITICAL)  # its "Failed to read ..." ERROR lines would double ours
    datasets.utils.logging.disable_progress_bar()
    datasets.config.HF_HUB_OFFLINE = True  # also when datasets was imported before the command set the env
    return datasets


def read_rows(source: str | Path, split: str = "train", no_header: bool = False, limit: int | None = None,
              columns: list[str] | None = None) -> list[dict]:
    """The first `limit` rows (all without it) as dicts, only `columns` kept if given; a headerless CSV/TSV names
    its columns "0", "1", ..."""
    path = Path(source)
    try:
        if path.is_dir():
            rows = _from_disk(path, split, limit, columns)
        elif path.is_file():
            rows = _from_file(path, no_header, limit, columns)
        elif _looks_like_hub_id(str(source)):
            rows = _from_hub(str(source), split, limit, columns)
        else:
            raise DataError(f"{source}: file not found")
    except DataError:
        raise
    except Exception as exc:  # pandas / pyarrow / datasets errors: one line naming the source
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{source}: cannot be read as {_format(path)} ({detail[:300]})") from None
    return rows


def _format(path: Path) -> str:
    if path.is_dir():
        return "a save_to_disk folder"
    suffix = path.suffix.lower()
    names = {".jsonl": "JSON Lines", ".txt": "text", ".conll": "CoNLL text"}
    return names.get(suffix, suffix[1:].upper()) if suffix in BUILDERS else "a cached Hub dataset"


def _from_file(path: Path, no_header: bool, limit: int | None, columns) -> list[dict]:
    suffix = path.suffix.lower()
    builder = BUILDERS.get(suffix)
    if builder is None:
        raise DataError(f"{path}: unsupported format {suffix or '(no extension)'}; use .csv, .tsv, .json, .jsonl, "
                        ".parquet, a save_to_disk folder or a cached Hub dataset id")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    kw = {}
    if builder == "csv":
        # GLUE TSVs hold bare quotes (QUOTE_NONE = 3); no NA parsing: "NA" or "None" stay text
        kw = {"sep": "\t" if suffix == ".tsv" else ",", "na_filter": False, "encoding": "utf-8-sig"}
        if suffix == ".tsv":
            kw["quoting"] = 3
        if no_header:
            kw["header"] = None
    elif builder == "text":
        kw = {"encoding": "utf-8-sig"}
    ds = _datasets().load_dataset(builder, data_files=str(path), split="train", streaming=True, **kw)
    rows = (({str(k): v for k, v in r.items()} if no_header else r) for r in itertools.islice(ds, limit))
    return [r if columns is None else {c: r[c] for c in columns} for r in rows]


def _from_disk(path: Path, split: str, limit: int | None, columns) -> list[dict]:
    datasets = _datasets()
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: a folder that is not a datasets.save_to_disk folder (no state.json / "
                        "dataset_dict.json); give a file or a save_to_disk folder") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, split, path)
    return _take(ds, limit, columns)


def _take(ds, limit: int | None, columns) -> list[dict]:
    if columns is not None:
        ds = ds.select_columns(columns)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds.to_list()


def _pick_split(splits, split: str, where) -> object:
    for name in SPLIT_ALIASES.get(split, (split,)):
        if name in splits:
            return splits[name]
    raise DataError(f"{where}: no {split!r} split; splits: {', '.join(splits)}")


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (len(parts) <= 2 and all(parts) and not text.startswith((".", "~"))
            and Path(text).suffix.lower() not in BUILDERS)


def _from_hub(repo_id: str, split: str, limit: int | None, columns) -> list[dict]:
    datasets = _datasets()
    try:
        splits = datasets.load_dataset(repo_id)
    except (ConnectionError, FileNotFoundError) as exc:
        raise DataError(f"{repo_id}: not a local file or folder, and not a Hub dataset in the local cache "
                        f"(nothing is downloaded; {type(exc).__name__})") from None
    ds = _pick_split(splits, split, repo_id)
    return _take(ds, limit, columns)


def column(spec: str, columns: list[str], where, what: str) -> str:
    """A column by name, or by 0-based index ("3") in a headerless file or one without such a name."""
    if spec in columns:
        return spec
    if spec.lstrip("-").isdigit():
        index = int(spec)
        if 0 <= index < len(columns):
            return columns[index]
        raise DataError(f"{where}: {what} column index {index} is out of range; the rows have {len(columns)} "
                        f"columns (0 to {len(columns) - 1})")
    raise DataError(f"{where}: {what} column {spec!r} not found; columns: {', '.join(sorted(columns))}")
