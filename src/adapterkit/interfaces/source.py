"""An interface as Python source (`ModelInterface(...)`), for users to copy an inferred one into a file."""

from __future__ import annotations

import dataclasses

_IMPORT = "from adapterkit.interfaces import FusedSlice, ModelInterface, OwnAttention, ResidualSite, SublayerSite"


def _value(value, indent: str) -> str:
    if isinstance(value, dict) and value:
        inner = indent + "    "
        items = "".join(f"{inner}{k!r}: {_value(v, inner)},\n" for k, v in value.items())
        return "{\n" + items + indent + "}"
    if dataclasses.is_dataclass(value):  # only the fields that differ from their defaults
        fields = [f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value)
                  if f.default is dataclasses.MISSING or getattr(value, f.name) != f.default]
        return f"{type(value).__name__}({', '.join(fields)})"
    return repr(dict(value) if hasattr(value, "items") else value)


def interface_source(interface) -> str:
    """`interface` as `ModelInterface(...)` with its non-default fields (plus the import it needs)."""
    lines = [_IMPORT, "", "INTERFACE = ModelInterface("]
    for f in dataclasses.fields(interface):
        value = getattr(interface, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING or value != default:
            if hasattr(value, "items"):
                value = dict(value)
            lines.append(f"    {f.name}={_value(value, '    ')},")
    lines.append(")")
    return "\n".join(lines) + "\n"
