"""Parse config strings such as ``"lora[r=4,alpha=16,attn_matrices=['q','k','v']]"``.

The bracket part is read as Python keyword arguments with `ast` (literals only; a bare word is taken as a
string, so ``non_linearity=gelu`` works). Nothing is ever evaluated.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ..errors import AdapterConfigError

_CONFIG_STRING = re.compile(r"^\s*(?P<name>[^\[\]|]+?)\s*(?:\[(?P<kwargs>.*)\])?\s*$", re.S)


def split_config_string(text: str) -> tuple[str, dict[str, Any]]:
    """Return (name, overrides) of one config string."""
    match = _CONFIG_STRING.match(text)
    if not match:
        raise AdapterConfigError(
            f"cannot parse adapter config string {text!r}; expected 'name' or 'name[key=value,...]'"
        )
    name, body = match.group("name"), match.group("kwargs")
    if not body or not body.strip():
        return name, {}
    try:
        call = ast.parse(f"_({body})", mode="eval").body
    except SyntaxError as exc:
        raise AdapterConfigError(f"cannot parse the overrides in {text!r}: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError):  # NUL bytes; nesting the parser cannot hold
        raise AdapterConfigError(f"cannot parse the overrides in {text!r}; expected key=value pairs") from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise AdapterConfigError(f"overrides in {text!r} must be key=value pairs separated by commas")
    overrides: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg in overrides:  # Python refuses this in a call; ast.parse does not
            raise AdapterConfigError(f"{text!r} sets {kw.arg!r} twice; give each key once")
        overrides[kw.arg] = _literal(kw.value, kw.arg, text)
    return name, overrides


def _literal(node: ast.AST, key: str, text: str) -> Any:
    if isinstance(node, ast.Name):  # bare word -> string
        return {"True": True, "False": False, "None": None}.get(node.id, node.id)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {[1]} (unhashable)
        raise AdapterConfigError(
            f"value of {key!r} in {text!r} is not a literal (numbers, strings, lists, dicts, True/False/None)"
        ) from None
