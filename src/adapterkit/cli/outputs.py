"""Where commands write: checked before any work starts, so a bad path costs nothing and never ends in a silent
non-save (transformers' save_pretrained only logs when handed a file)."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError


def output_dir(path: str | Path, flag: str = "--output-dir") -> Path:
    """Create `path` as a directory; refuse one that is a file or lies under a file."""
    out = Path(path)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is" if p == out else f"lies under {p}, which is"
                raise UsageError(f"{flag} {out}: {what} not a directory; give a directory path (it is created)")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {out}: cannot create the directory ({exc.strerror or exc})") from None
    return out


def output_file(path: str | Path, flag: str = "--output") -> Path:
    """A file to (over)write: not a directory, and its folder is (or can be made) a directory."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{flag} {out}: is a directory; give a file path")
    output_dir(out.parent, flag)
    return out


def check_written(path: Path, what: str) -> None:
    """A save that reported nothing but wrote nothing is a failure, not a success."""
    if not path.is_dir() or not any(path.iterdir()):
        raise UsageError(f"{path}: {what} was not written")
