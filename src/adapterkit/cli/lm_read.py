"""Reading language-modelling JSONL for `--task causal-lm` / `--task seq2seq`: rows through HF `datasets`, the
format told by the fields, every row checked, so any problem is one `DataError` line naming the file, the line and
the field. Formats: `text`, `prompt` + `completion`, chat `messages`; seq2seq: `source` + `target` (or prompt +
completion)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from .data import DataError

CAUSAL_FORMATS = {"messages": ("messages",), "prompt": ("prompt", "completion"), "text": ("text",)}
SEQ2SEQ_FORMATS = {"source": ("source", "target"), "prompt": ("prompt", "completion")}


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSONL (or JSON) file, read by `datasets`. A file it cannot read is read line by line: a line
    that is not a JSON object is the error; if every line is one (Arrow could not unify a field's types across rows,
    say an int `completion` among strings), those rows go on to the row checks, which name the line and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"{path}: unsupported format {path.suffix or '(no extension)'} for a language-modelling "
                        "task; use .jsonl (one JSON object a line)")
    if not path.read_bytes().strip():
        raise DataError(f"{path}: no data rows (the file is empty)")
    import datasets
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # datasets logs its own multi-line error before raising; ours is the one line
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory() as cache:
            rows = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache,
                                         keep_in_memory=True).to_list()
    except Exception:  # noqa: BLE001  (datasets / pyarrow raise many kinds; the scan below names the line)
        rows = _read_lines(path)
    finally:
        logger.setLevel(level)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def _read_lines(path: Path) -> list[dict]:
    """Every line a JSON object (bounded nesting), or a DataError naming the first line that is not."""
    from ..errors import CheckpointError
    from ..io.files import parse_json
    rows = []
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = parse_json(line, f"{path}: line {number}")
            except CheckpointError as exc:
                raise DataError(str(exc).replace("; the file is corrupted or truncated", "")) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is not a JSON object (found a JSON {type(row).__name__})")
            rows.append(row)
    return rows


def line_of(path: Path, row: int) -> int:
    """The file line of data row `row` (0-based; blank lines hold no row)."""
    seen = -1
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, 1):
            seen += bool(line.strip())
            if seen == row:
                return number
    return row + 1


def detect_format(path: Path, rows: list[dict], seq2seq: bool) -> str:
    formats = SEQ2SEQ_FORMATS if seq2seq else CAUSAL_FORMATS
    fields = set().union(*(r for r in rows[:1000]))
    for name, needed in formats.items():
        if set(needed) <= fields:
            return name
    allowed = " or ".join(f"'{' + '.join(n)}'" if len(n) > 1 else f"'{n[0]}'" for n in formats.values())
    raise DataError(f"{path}: no {allowed} field(s) for --task {'seq2seq' if seq2seq else 'causal-lm'}; "
                    f"fields found: {', '.join(sorted(fields)) or '(none)'}")


def check_rows(path: Path, rows: list[dict], fmt: str, seq2seq: bool) -> None:
    needed = (SEQ2SEQ_FORMATS if seq2seq else CAUSAL_FORMATS)[fmt]
    for i, row in enumerate(rows):
        for name in needed:
            value = row.get(name)
            problem = _messages_problem(value) if name == "messages" else (
                None if isinstance(value, str) and value.strip() else "is missing or empty" if value in (None, "")
                else f"must be a string, not {type(value).__name__}")
            if problem:
                raise DataError(f"{path}: line {line_of(path, i)}: {name!r} {problem}")


def _messages_problem(value) -> str | None:
    if not isinstance(value, list) or not value:
        return "is missing or empty (a list of {'role', 'content'} objects)"
    for turn in value:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not isinstance(
                turn.get("content"), str):
            return "holds a turn that is not a {'role': str, 'content': str} object"
    if not any(t["role"] == "assistant" for t in value):
        return "has no 'assistant' turn (the assistant turns are what the model learns)"
    return None
