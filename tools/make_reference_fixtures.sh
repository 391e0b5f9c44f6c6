#!/usr/bin/env bash
# Regenerate tests/fixtures/adapters_ref/ and adapters_ref_archs/ with the real `adapters` package
# (AdapterHub) on transformers 4.57.x, inside an isolated venv at .venv-ref/.
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

"$VENV/bin/python" "$ROOT/tools/make_reference_fixtures.py" "$@"
"$VENV/bin/python" "$ROOT/tools/make_method_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_arch_fixtures.py"
