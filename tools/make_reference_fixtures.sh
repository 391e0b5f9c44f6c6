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
"$VENV/bin/python" "$ROOT/tools/make_newarch_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_summary_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_dora_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_vera_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_reft_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_mtl_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_prompt_fixtures.py"
# stochastic depth needs torchvision's StochasticDepth: its wheel, unpacked beside the venv (only that file is used)
TORCHVISION="$VENV/torchvision-stochastic-depth"
[ -d "$TORCHVISION/torchvision" ] || "$VENV/bin/python" -m pip install -q --no-deps --target "$TORCHVISION" "torchvision==0.28.0"
PYTHONPATH="$TORCHVISION" "$VENV/bin/python" "$ROOT/tools/make_plus_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_plus_arch_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_setup_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_prefix_combo_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_placement_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_encdec_fixtures.py"
"$VENV/bin/python" "$ROOT/tools/make_xmod_fixtures.py"
