"""`AdapterSetup`: a context manager that overrides the active adapters of every model inside it."""

from __future__ import annotations

import contextvars
import threading

from .blocks import parse_composition

_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar("adapterkit_setup", default=None)
# How many AdapterSetup blocks are open in any thread or task. While none is, `current_override` answers without
# reading the ContextVar: every adapter site asks on every call, and torch.compile cannot trace ContextVar.get
# (a graph break per site); a plain module global it can (it guards on its value).
_OPEN = 0
_OPEN_LOCK = threading.Lock()


def current_override():
    """The innermost AdapterSetup's composition, or None outside any."""
    if _OPEN == 0:
        return None
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
        global _OPEN
        with _OPEN_LOCK:
            _OPEN += 1
        self._token = _OVERRIDE.set(self.adapter_setup)
        return self

    def __exit__(self, *exc):
        global _OPEN
        _OVERRIDE.reset(self._token)
        with _OPEN_LOCK:
            _OPEN -= 1
        return False
