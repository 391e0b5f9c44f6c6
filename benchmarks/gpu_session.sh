#!/usr/bin/env bash
# Everything issue 7 still needs from a lent GPU, as one call of a few minutes (run from the repository root):
#   OUT=$OUT bash benchmarks/gpu_session.sh                 # profile speed cuda_check
#   OUT=$OUT STEPS="speed_ab compiled" bash benchmarks/gpu_session.sh
# Steps: profile: the step profile (profile_step.py; incl. LoRA with the fused node off); speed: the speed cases of
# the targets (run_all.py, adapterkit and peft; `adapters` needs its own venv, left out here); speed_ab: the LoRA
# cases eagerly as they run by default and with run_all.py --no-fused-lora (two processes; since training on a GPU
# takes the hook path by default, only inference differs now); fused_ab: the fused node on and off interleaved in one
# process (fused_ab.py); speed_bf16: the speed cases on a bfloat16 model with float32 adapters; compiled: the cases under torch.compile
# "reduce-overhead" (compiled.py); cuda_check: CUDA equivalence of every method (tools/cuda_check.py). Timings
# first, on an idle machine. Each step has its own time limit, so one that
# hangs cannot eat the session. Results go to $WORK and back as one archive ($OUT/gpu-session.tgz: a device call
# returns at most 8 files). Issue 20's decoder cases (benchmarks/decoder.py, a Llama-shaped model beside peft), about
# 6 minutes together on an H100:  STEPS="decoder decoder_bf16 decoder_compiled" bash benchmarks/gpu_session.sh
# decoder: many LoRA adapters in one generate() and the train steps against the floor, eager, float32;
# decoder_bf16: the same on a bfloat16 base with float32 adapters; decoder_compiled: the floor and the LoRA train
# steps under torch.compile (default mode; generate() stays eager). DEVICE=cpu and SHAPE="--tiny --layers 2 --batch 2 --seq 16" check the script itself
# without a GPU. Wheels in .whl/ (transformers, peft: the versions of the CPU runs) are installed first if present.
set -u
OUT=${OUT:-bench-out/gpu}
WORK=${WORK:-/tmp/gpu-session}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-}
DECODER_SHAPE=${DECODER_SHAPE:-}  # e.g. "--tiny" for a check of the script on the CPU
STEPS=${STEPS:-profile speed cuda_check}
MODE=${MODE:-reduce-overhead}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT" "$WORK"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; lscpu | grep "Model name"; uname -r
 $PY -c "import torch, transformers; print(torch.__version__, transformers.__version__)") > "$WORK/machine.txt" 2>&1
LIBS="adapterkit"
$PY -c "import peft" 2>/dev/null && LIBS="adapterkit peft"
step() {  # name, limit in seconds, command...
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - start)) s"
}
for name in $STEPS; do case $name in
profile) step profile 150 $PY benchmarks/profile_step.py --device "$DEVICE" --libraries $LIBS $SHAPE \
    --cases plain_forward floor full_ft lora_train lora_train_hook lora_infer lora_infer_hook pfeiffer_train \
    prefix_train --out "$WORK/profile" ;;
speed) step speed 180 $PY benchmarks/run_all.py --device "$DEVICE" --parts speed --libraries $LIBS $SHAPE \
    --cases floor full_ft lora_train lora_infer lora_merged pfeiffer_train prefix_train prefix_infer \
    --rounds 20 --warmup 3 --out "$WORK/speed" ;;
speed_bf16) step speed_bf16 120 $PY benchmarks/run_all.py --device "$DEVICE" --parts speed --libraries $LIBS $SHAPE \
    --dtype bfloat16 --cases floor lora_train lora_infer lora_merged pfeiffer_train prefix_train --rounds 20 \
    --warmup 3 --out "$WORK/speed_bf16" ;;
speed_ab)
    for variant in fused hook; do
        flag=""; [ $variant = hook ] && flag="--no-fused-lora"
        step speed_$variant 60 $PY benchmarks/run_all.py --device "$DEVICE" --parts speed --libraries adapterkit \
            $SHAPE --cases floor lora_train lora_infer --rounds 20 --warmup 3 $flag --out "$WORK/speed_$variant"
    done ;;
compiled) step compiled 300 $PY benchmarks/compiled.py --device "$DEVICE" --mode "$MODE" --libraries $LIBS $SHAPE \
    --cases plain_forward floor lora_train lora_infer pfeiffer_train --out "$WORK/compiled" ;;
fused_ab) step fused_ab 120 $PY benchmarks/fused_ab.py --device "$DEVICE" $SHAPE --rounds 50 --out "$WORK/fused_ab" ;;
decoder) step decoder 150 $PY benchmarks/decoder.py --device "$DEVICE" --rounds 5 --warmup 2 $DECODER_SHAPE \
    --out "$WORK/decoder" ;;
decoder_bf16) step decoder_bf16 120 $PY benchmarks/decoder.py --device "$DEVICE" --dtype bfloat16 --rounds 5 \
    --warmup 2 $DECODER_SHAPE --out "$WORK/decoder_bf16" ;;
decoder_compiled) step decoder_compiled 240 $PY benchmarks/decoder.py --device "$DEVICE" --parts train --compile \
    --methods LoRA --rounds 10 --warmup 3 $DECODER_SHAPE --out "$WORK/decoder_compiled" ;;
cuda_check) step cuda_check 120 $PY tools/cuda_check.py --device "$DEVICE" --out "$WORK/cuda_check.json" ;;
*) echo "unknown step $name" ;;
esac; done
tar czf "$OUT/gpu-session.tgz" -C "$WORK" .
cat "$WORK/machine.txt"
tail -n 3 "$WORK/cuda_check.log" 2>/dev/null
grep -v "^\*\*\|^top kernels\|^$" "$WORK/profile/profile.md" 2>/dev/null
for d in speed speed_bf16 speed_fused speed_hook; do grep "^|" "$WORK/$d/report.md" 2>/dev/null | head -n 20; done
cat "$WORK/compiled/compiled.md" "$WORK/fused_ab/fused_ab.md" 2>/dev/null
cat "$WORK"/decoder*/decoder.md 2>/dev/null
tail -n 5 "$WORK/compiled.log" 2>/dev/null
exit 0
