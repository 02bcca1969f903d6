#!/usr/bin/env bash
# Checkpoint runs on the GPU, in one call: build (Release, sm_90a, warnings as errors), the
# checkpoint GPU tests (device loads vs host loads, `moerun run --model DIR` on CUDA vs the CPU
# backend in every layout and spelling, router GEMM, staged uploads), the default `moerun run` of
# every preset timed, and the independent check against transformers' own MoE blocks
# (tests/transformers/check_against_transformers.py; needs torch and transformers).
# Exits non-zero when any step fails: a test (a GPU test that skips fails too, MOERUN_REQUIRE_GPU=1
# from device-common.sh), a preset's run, or the check against transformers when it runs.
#
# Usage: scripts/device-checkpoints.sh [deps_dir]   (deps default: ../deps beside this checkout)
# Environment: OUT (logs; default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build),
#   CHECK_BUDGET_S (default 540), MOERUN_CPU_THREADS.
# Writes to $OUT: build.log tests.log presets.txt transformers.log transformers.json summary.txt.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
default_budget=540
source "$(dirname "$0")/device-common.sh"
build_targets cuda_test io_cuda_test io_cli_cuda_test io_cli_test moerun_cli

# run_test SECONDS BINARY ARGS...: appends to tests.log; a failure (or timeout) fails the script.
run_test() {
  local seconds=$1
  shift
  timeout "$seconds" "$@" >>"$out/tests.log" 2>&1 || fail "$(basename "$1"): rc $? (see tests.log)"
}
: >"$out/tests.log"
run_test 240 "$build/tests/cuda_test" --gtest_filter='CudaRouterGemm.*:CudaStagedUpload.*'
run_test 240 "$build/tests/io/io_cuda_test"
run_test 300 "$build/tests/io/io_cli_cuda_test"
note "checkpoint GPU tests: $(grep -c '^\[       OK \]' "$out/tests.log") ok," \
  "$(grep -c '^\[  FAILED  \]' "$out/tests.log") failed," \
  "$(grep -c 'SKIPPED' "$out/tests.log") skipped ($(($(date +%s) - start)) s)"
grep -B3 -A12 -E "Failure|error:" "$out/tests.log" | head -60

# The default job of every preset must finish within 30 s (issue 12).
: >"$out/presets.txt"
for model in small qwen3-30b-a3b mixtral-8x7b deepseek-v3; do
  t0=$(date +%s.%N)
  timeout 120 "$build/tools/moerun" run --model "$model" --json >>"$out/presets.txt" 2>&1
  rc=$?
  note "moerun run --model $model: rc $rc, $(echo "$(date +%s.%N) - $t0" | bc) s wall"
  [ $rc -eq 0 ] || fail "moerun run --model $model: rc $rc"
done

if python3 -c "import torch, transformers, safetensors" 2>/dev/null; then
  timeout "$(($(left) - 10))" python3 "$repo/tests/transformers/check_against_transformers.py" \
    --moerun "$build/tools/moerun" --work /tmp/moerun-transformers >"$out/transformers.log" 2>&1
  rc=$?
  note "against transformers: rc $rc ($(tail -1 "$out/transformers.log"))"
  [ $rc -eq 0 ] || fail "against transformers: rc $rc"
  cp /tmp/moerun-transformers/results.json "$out/transformers.json" 2>/dev/null
else
  note "against transformers: not run (python3 lacks torch, transformers or safetensors)"
fi
finish
