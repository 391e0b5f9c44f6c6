#!/usr/bin/env bash
# Everything issue 7 still needs from a lent GPU, as one call of a few minutes (run from the repository root):
#   OUT=$OUT bash benchmarks/gpu_session.sh
# 1. CUDA equivalence of every method (tools/cuda_check.py), 2. the step profile (profile_step.py), 3. the speed
# cases of the targets (run_all.py, adapterkit and peft; `adapters` needs its own venv, left out here).
# Each step has its own time limit, so one that hangs cannot eat the session. DEVICE=cpu and SHAPE="--tiny
# --layers 2 --batch 2 --seq 16" check the script itself without a GPU.
set -u
OUT=${OUT:-bench-out/gpu}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-}
PY=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
LIBS="adapterkit"
$PY -c "import peft" 2>/dev/null && LIBS="adapterkit peft"
step() {  # name, limit in seconds, command...
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - start)) s"
}
step cuda_check 150 $PY tools/cuda_check.py --device "$DEVICE" --out "$OUT/cuda_check.json"
step profile 200 $PY benchmarks/profile_step.py --device "$DEVICE" --libraries $LIBS $SHAPE \
    --cases plain_forward floor full_ft lora_train lora_infer pfeiffer_train prefix_train --out "$OUT/profile"
step speed 240 $PY benchmarks/run_all.py --device "$DEVICE" --parts speed --libraries $LIBS $SHAPE \
    --cases floor full_ft lora_train lora_infer lora_merged pfeiffer_train prefix_train prefix_infer \
    --rounds 20 --warmup 3 --out "$OUT/speed"
tail -n 3 "$OUT/cuda_check.log"
cat "$OUT/profile/profile.md" "$OUT/speed/report.md" 2>/dev/null | head -n 60
