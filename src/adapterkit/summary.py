"""`adapter_summary()`: the release notes' table of adapters, their sizes and states."""

from __future__ import annotations

_WIDTH = 80
_HEADER = "{:<25}{:<15}{:>12}{:>12}{:>8}{:>8}"
_ROW = "{:<25}{:<15}{:>12,}{:>12.3f}{:>8}{:>8}"


def summary_rows(state) -> list[dict]:
    """One dict per adapter (name, architecture, #param, %param, active, train), then the full model."""
    active = state.active.flatten() if state.active is not None else []
    rows = []
    for name, config in state.configs.items():
        params = list(state.container[name].parameters())
        # frozen tensors a module declares part of the adapter (VeRA's random pair), counted as the `adapters`
        # package counts its frozen shared parameters; other buffers (torch's parametrization caches) are not
        frozen = [getattr(m, b) for m in state.container[name].modules() for b in getattr(m, "counted_buffers", ())]
        rows.append({
            "name": name,
            "architecture": config.method,
            "#param": sum(p.numel() for p in params) + sum(b.numel() for b in frozen),
            "%param": 0.0,
            "active": name in active,
            "train": all(p.requires_grad for p in params),
        })
    adapter_ids = {id(p) for p in state.container.parameters()}
    total = sum(p.numel() for p in state.base.parameters() if id(p) not in adapter_ids)
    for row in rows:
        row["%param"] = row["#param"] / total * 100 if total else 0.0
    rows.append({"name": "Full model", "architecture": "", "#param": total, "%param": 100.0,
                 "active": "", "train": not state.model_frozen})
    return rows


def format_summary(rows: list[dict]) -> str:
    def cells(row):
        return [row["name"], row["architecture"], row["#param"], row["%param"],
                row["active"] if row["active"] == "" else int(row["active"]), int(row["train"])]

    lines = ["=" * _WIDTH, _HEADER.format("Name", "Architecture", "#Param", "%Param", "Active", "Train"),
             "-" * _WIDTH]
    lines += [_ROW.format(*cells(r)) for r in rows[:-1]]
    lines += ["-" * _WIDTH, _ROW.format(*cells(rows[-1])), "=" * _WIDTH]
    return "\n".join(lines)
