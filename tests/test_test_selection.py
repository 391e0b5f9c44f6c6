"""The test selection (README, "Tests"): plain pytest leaves `slow` out, `make test` (CI) adds `slow` + `ci` tests
and fails a `ci` test that skips, so CI cannot pass without running them; unknown markers are errors.

Runs pytest on a sample file with the repository's pyproject.toml, the hook conftest.py takes from ci_markers.py
(without conftest.py's torch import, so each run starts quickly) and the Makefile's CI selection.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = '''
import pytest

def test_plain():
    pass

@pytest.mark.slow
def test_slow_only():
    pass

@pytest.mark.slow
@pytest.mark.ci
def test_slow_ci():
    pass

@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.skipif(True, reason="the reference venv is missing")
def test_ci_skipped():
    pass

@pytest.mark.slow
@pytest.mark.skipif(True, reason="no GPU")
def test_slow_skipped():
    pass
'''


def ci_selection() -> str:
    match = re.search(r"^CI_TESTS\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile defines CI_TESTS, the marker expression `make test` runs"
    return match.group(1).strip()


def run(tmp_path: Path, *args: str, ci: bool = False) -> tuple[dict[str, str], str]:
    """({test name: passed / failed / skipped}, output) of a pytest run on the sample, with the repository's config."""
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "conftest.py").write_text("from ci_markers import pytest_runtest_makereport  # noqa: F401\n")
    env = {k: v for k, v in os.environ.items() if k != "ADAPTERKIT_CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    if ci:
        env["ADAPTERKIT_CI"] = "1"
    report = tmp_path / "report.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                             str(tmp_path), "-p", "no:cacheprovider", f"--junitxml={report}", *args,
                             str(tmp_path / "test_sample.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcomes[case.get("name")] = "failed" if kinds & {"failure", "error"} else kinds.pop() if kinds else "passed"
    return outcomes, result.stdout + result.stderr


def test_conftest_installs_the_hook():
    import ci_markers
    import conftest
    assert conftest.pytest_runtest_makereport is ci_markers.pytest_runtest_makereport


def test_plain_pytest_leaves_slow_tests_out(tmp_path):
    got, output = run(tmp_path)
    assert got == {"test_plain": "passed"}, output


def test_ci_runs_the_ci_tests_and_a_skip_fails(tmp_path):
    got, output = run(tmp_path, "-m", ci_selection(), ci=True)
    assert got == {"test_plain": "passed", "test_slow_ci": "passed", "test_ci_skipped": "failed"}, output
    assert "the reference venv is missing" in output  # the failure says why it skipped


def test_outside_ci_a_ci_test_may_skip(tmp_path):
    got, output = run(tmp_path, "-m", "slow", ci=False)
    assert got == {"test_slow_only": "passed", "test_slow_ci": "passed", "test_ci_skipped": "skipped",
                   "test_slow_skipped": "skipped"}, output


def test_an_unknown_marker_is_an_error(tmp_path):
    (tmp_path / "test_typo.py").write_text("import pytest\n\n@pytest.mark.cii\ndef test_x():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                             str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_typo.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "'cii' not found in `markers`" in result.stdout + result.stderr
