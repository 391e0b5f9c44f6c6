#!/usr/bin/env bash
# Regenerate tests/fixtures/adapters_ref/ and adapters_ref_archs/ with the real `adapters` package
# (AdapterHub) on transformers 4.57.x, inside an isolated venv at .venv-ref/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-ref"

bash "$ROOT/tools/make_reference_venv.sh"

"$VENV/bin/python" "$ROOT/tools/make_reference_fixtures.py" "$@"
"$VENV/bin/python" "$ROOT/tools/make_method_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_arch_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_summary_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_setup_fixtures.py"
