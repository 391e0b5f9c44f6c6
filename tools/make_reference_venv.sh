#!/usr/bin/env bash
# Create (or complete) the reference venv .venv-ref/: the real `adapters` package (AdapterHub) on transformers 4.57.x,
# which cannot live beside adapterkit's transformers 5.x. Used by `make ref-venv` (so by `make test`) and by
# tools/make_reference_fixtures.sh; installs only, never regenerates fixtures.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-ref"
CONSTRAINTS="$ROOT/tools/ref-constraints.txt"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS")
# torch first, pinned to the local CPU wheel, so nothing later resolves another torch.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "adapters==1.3.0" "transformers==4.57.6" safetensors
