"""Rules for names that users and checkpoint files give adapters, fusions and heads.

A name becomes a key of an nn.ModuleDict (`model.adapterkit[<name>]`, `model.heads[<name>]`) and, in
`save_all_*`, the name of a folder under the target directory. So it must be one path component that is safe on
every OS (Linux, macOS, Windows) and no attribute of nn.ModuleDict: otherwise a name could write outside the
target (`"/abs/x"`, `"a/b"`), fail on another OS (`"CON"`, `"a:b"`) or break the container (`"keys"`, `"to"`).
Commas are allowed: a fusion's default name is its adapters' names joined by commas ("a,b").
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch.nn as nn

from .errors import AdapterError, CheckpointError

MAX_NAME_BYTES = 200  # UTF-8 bytes; file systems allow 255 per path component
_FORBIDDEN = set('/\\:*?"<>|.')
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
RULES = (f"use a non-empty string of at most {MAX_NAME_BYTES} UTF-8 bytes without dots, whitespace, control "
         "characters or any of / \\ : * ? \" < > |, that is not a Windows device name (CON, NUL, COM1, ...), "
         "'__base__' nor an nn.ModuleDict attribute (keys, to, training, ...)")


@lru_cache(maxsize=1)
def _module_attributes() -> frozenset[str]:
    return frozenset(dir(nn.ModuleDict()))


def name_problem(name: Any) -> str | None:
    """Why `name` is not a valid adapter / fusion / head name, or None if it is."""
    if not isinstance(name, str):
        return f"a name must be a string, not {type(name).__name__}"
    if not name:
        return "the name is empty"
    bad = sorted({c for c in name if c in _FORBIDDEN or c.isspace()
                  or unicodedata.category(c) in ("Cc", "Cf", "Cs")})
    if bad:
        return f"it contains {', '.join(map(repr, bad))}"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"it is {len(name.encode('utf-8'))} UTF-8 bytes long"
    if name.upper() in _RESERVED:
        return "it is a reserved device name on Windows"
    if name == "__base__":
        return "it is reserved: adapter_names=[...] uses '__base__' for base-model rows (as peft does)"
    if name in _module_attributes():
        return "it is an attribute of nn.ModuleDict (adapters, fusions and heads are kept in one)"
    return None


def is_valid_name(name: Any) -> bool:
    return name_problem(name) is None


def check_adapter_name(name: Any, what: str = "adapter", role: str = "") -> None:
    """Raise AdapterError naming `name`, why it is refused and what is allowed, unless it is a valid name.

    `what`: "adapter" or "fusion"; `role`: appended to say whose name it is (" for a prediction head")."""
    problem = name_problem(name)
    if problem is not None:
        raise AdapterError(f"invalid {what} name {name!r}{role}: {problem}; {RULES}")


def check_loaded_name(name: Any, load_as: str | None, source: Any, what: str = "adapter", role: str = "") -> None:
    """Check the name a load gives: `load_as` if given, else the name read from the file `source` (then a
    CheckpointError that names the file and suggests load_as)."""
    if load_as is not None:  # given, even empty: checked as given, never silently replaced by the saved name
        check_adapter_name(name, what, role)
        return
    try:
        check_adapter_name(name, what, role)
    except AdapterError as e:
        raise CheckpointError(f"{source}: {e} (the name saved there; load it with load_as=<a valid name>)") from None


def child_directory(parent: str | Path, name: str, what: str = "adapter") -> Path:
    """`parent / name` for a checked name: the folder `save_all_*` writes `name` to, always inside `parent`."""
    check_adapter_name(name, what)
    return Path(parent) / name
