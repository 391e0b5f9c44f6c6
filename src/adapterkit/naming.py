"""Rules for names that users and checkpoint files give adapters, fusions and heads: they become module keys
(`adapterkit.<name>...`) and directory names, so they may not contain dots, path separators or whitespace."""

from __future__ import annotations

from typing import Any

from .errors import AdapterError


def check_adapter_name(name: Any, what: str = "adapter") -> None:
    """Raise AdapterError unless `name` is a non-empty string without dots or whitespace."""
    if not isinstance(name, str) or not name or "." in name or any(c.isspace() for c in name):
        raise AdapterError(
            f"invalid {what} name {name!r}: use a non-empty string without dots or whitespace"
        )
