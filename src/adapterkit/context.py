"""`AdapterSetup`: a context manager that overrides the active adapters of every model inside it."""

from __future__ import annotations

import contextvars

from .composition import parse_composition

_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar("adapterkit_setup", default=None)


def current_override():
    """The innermost AdapterSetup's composition, or None outside any."""
    return _OVERRIDE.get()


class AdapterSetup:
    """``with AdapterSetup("a"): model(...)`` runs with adapter "a" active, whatever `set_active_adapters` said.

    ``AdapterSetup(None)`` runs the plain model. Nested setups override outer ones; thread- and task-local.
    """

    _NONE = ("__adapterkit_no_adapters__",)

    def __init__(self, adapter_setup):
        parsed = parse_composition(adapter_setup)
        self.adapter_setup = parsed if parsed is not None else self._NONE
        self._token = None

    def __enter__(self):
        self._token = _OVERRIDE.set(self.adapter_setup)
        return self

    def __exit__(self, *exc):
        _OVERRIDE.reset(self._token)
        return False
