#!/usr/bin/env bash
# The non-GEMM stages' device check, in one call: build (Release, sm_90a), the stage and layer GPU
# tests and the portable-math bit check, compute-sanitizer memcheck and racecheck on the stage
# tests, then `moerun bench` of every stage for DeepSeek-V3 (EP8 view) and Qwen3-30B-A3B. Exits 1
# when any step fails, a test is skipped, or a sanitizer reports anything.
#
# Usage: scripts/device-stages.sh [deps_dir]   (deps default: ../deps beside this checkout)
# Environment: OUT (logs; default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build),
#   CHECK_BUDGET_S (default 280), STAGE_TOKENS (default 128,8192), MOERUN_CPU_THREADS.
# Writes to $OUT: build.log tests.log sanitizer-{memcheck,racecheck}.log bench-*.txt summary.txt.
set -uo pipefail
default_budget=280
source "$(dirname "$0")/device-common.sh"
build_targets moerun_cli cuda_test portable_math_device_test

"$build/tests/portable_math_device_test" >"$out/tests.log" 2>&1
rc=$?
note "portable_math_device_test: rc $rc"
[ $rc -eq 0 ] || fail "portable_math_device_test"
stage_tests='CudaRouting.*:CudaDispatch.*:CudaActivation.*:CudaSilu*:CudaLayer.*'
slot=$(($(left) - 150))
[ "$slot" -lt 60 ] && slot=60  # the tests come first; the benches take what is left
timeout "$slot" "$build/tests/cuda_test" --gtest_filter="$stage_tests" \
  >>"$out/tests.log" 2>&1
rc=$?
note "cuda_test ($stage_tests): rc $rc ($(($(date +%s) - start)) s)"
[ $rc -eq 0 ] || fail "cuda_test ($stage_tests)"
! grep -q '\[  SKIPPED \]' "$out/tests.log" || fail "tests skipped"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]" "$out/tests.log" | tee -a "$summary"
grep -B3 -A12 -E "Failure" "$out/tests.log" | head -60

for tool in memcheck racecheck; do
  sanitize "$tool" "$out/sanitizer-$tool.log" 60 "$build/tests/cuda_test" \
    --gtest_filter='CudaRouting.*:CudaActivation.*:CudaSilu*'
done

tokens=${STAGE_TOKENS:-128,8192}
"$build/tools/moerun" bench --model deepseek-v3 --ep-size 8 --tokens "$tokens" --repeat 20 \
  >"$out/bench-deepseek-v3.txt" 2>&1
rc=$?
note "bench deepseek-v3: rc $rc"
[ $rc -eq 0 ] || fail "bench deepseek-v3"
"$build/tools/moerun" bench --model qwen3-30b-a3b --tokens "$tokens" --repeat 20 \
  >"$out/bench-qwen3.txt" 2>&1
rc=$?
note "bench qwen3: rc $rc"
[ $rc -eq 0 ] || fail "bench qwen3"
grep -hE "routing|activation|silu|SiLU|copy|layer" "$out"/bench-*.txt | head -40
finish
