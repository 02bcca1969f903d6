#!/usr/bin/env bash
# The non-GEMM stages' device check, in one call: build (Release, sm_90a), the stage and layer GPU
# tests and the portable-math bit check, compute-sanitizer memcheck and racecheck on the stage
# tests, then `moerun bench` of every stage for DeepSeek-V3 (EP8 view) and Qwen3-30B-A3B.
#
# Usage: scripts/device-stages.sh [deps_dir]   (deps default: ../deps beside this checkout)
# Environment: OUT (logs; default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build),
#   CHECK_BUDGET_S (default 280), STAGE_TOKENS (default 128,8192), MOERUN_CPU_THREADS.
# Writes to $OUT: build.log tests.log sanitizer.log bench-*.txt summary.txt.
set -uo pipefail
default_budget=280
source "$(dirname "$0")/device-common.sh"
build_targets moerun_cli cuda_test portable_math_device_test

"$build/tests/portable_math_device_test" >"$out/tests.log" 2>&1
note "portable_math_device_test: rc $?"
stage_tests='CudaRouting.*:CudaDispatch.*:CudaActivation.*:CudaSilu*:CudaLayer.*'
slot=$(($(left) - 150))
[ "$slot" -lt 60 ] && slot=60  # the tests come first; the benches take what is left
timeout "$slot" "$build/tests/cuda_test" --gtest_filter="$stage_tests" \
  >>"$out/tests.log" 2>&1
note "cuda_test ($stage_tests): rc $? ($(($(date +%s) - start)) s)"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]" "$out/tests.log" | tee -a "$summary"
grep -B3 -A12 -E "Failure" "$out/tests.log" | head -60

: >"$out/sanitizer.log"
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 9 "$build/tests/cuda_test" \
    --gtest_filter='CudaRouting.*:CudaActivation.*:CudaSilu*' >>"$out/sanitizer.log" 2>&1
  note "sanitizer $tool: rc $? (0 clean, 9 errors, 124 timed out)" \
    "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer.log" | tail -1)"
done

tokens=${STAGE_TOKENS:-128,8192}
"$build/tools/moerun" bench --model deepseek-v3 --ep-size 8 --tokens "$tokens" --repeat 20 \
  >"$out/bench-deepseek-v3.txt" 2>&1
note "bench deepseek-v3: rc $?"
"$build/tools/moerun" bench --model qwen3-30b-a3b --tokens "$tokens" --repeat 20 \
  >"$out/bench-qwen3.txt" 2>&1
note "bench qwen3: rc $?"
grep -hE "routing|activation|silu|SiLU|copy|layer" "$out"/bench-*.txt | head -40
note "total: $(($(date +%s) - start)) s"
