"""Under `make test` (CI, ADAPTERKIT_CI=1) a test marked `ci` that skips fails: CI must not pass without running it.

The `ci` tests need what `make test` creates (the reference venv, the launchers in .venv/bin); a skip there means
something is missing, which CI must show. Outside CI they skip as usual. Hooked in by tests/conftest.py; kept free
of torch so the selection test (test_test_selection.py) starts pytest quickly.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("ADAPTERKIT_CI") == "1" and item.get_closest_marker("ci") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is marked `ci` but skipped under ADAPTERKIT_CI=1 ({reason}); `make test` "
                           "creates what the `ci` tests need (.venv, .venv-ref: `make ref-venv`)")
