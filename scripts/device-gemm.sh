#!/usr/bin/env bash
# The grouped GEMM's device check, in one call (a subset of scripts/device-check.sh plus the
# benchmark): build cuda_test (Release, sm_90a, warnings as errors), the SASS check, kernel
# resources, the GEMM and layer GPU tests, the issue-4 benchmark (`moerun bench-gemm --variant all`,
# FP8 then BF16), then
# compute-sanitizer memcheck/racecheck/synccheck on small GEMM tests while the budget lasts. Exits 1
# when any step fails, a test is skipped, or a sanitizer reports anything (MOERUN_REQUIRE_GPU=1:
# a test without a usable device fails).
#
# Usage: scripts/device-gemm.sh [deps_dir]   (deps default: ../deps beside this checkout)
# Environment: OUT (logs; default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build),
#   CHECK_BUDGET_S (default 280), GEMM_TEST_FILTER (default 'CudaGroupedGemm.*:CudaLayer.*'),
#   GEMM_SANITIZE (default 1), MOERUN_CPU_THREADS.
# Writes to $OUT: build.log sass.txt resources.txt smoke.log tests.log bench.txt
#   sanitizer-{memcheck,racecheck,synccheck}.log summary.txt.
set -uo pipefail
default_budget=280
source "$(dirname "$0")/device-common.sh"
build_targets cuda_test moerun_cli

bash "$repo/scripts/check-sass.sh" "$build/src/libmoerun.a" >"$out/sass.txt" 2>&1
rc=$?
note "sass check: rc $rc ($(grep -c ': ok ' "$out/sass.txt") kernels ok)"
[ $rc -eq 0 ] || fail "check-sass"
cuobjdump -res-usage "$build/src/libmoerun.a" 2>&1 | grep -A1 grouped_gemm_kernel >"$out/resources.txt"
note "gemm kernels: $(grep -o 'REG:[0-9]* STACK:[0-9]*' "$out/resources.txt" | tr '\n' ' ')"

# Smoke first, with a short limit: a kernel that hangs must not eat the whole budget.
timeout 90 "$build/tests/cuda_test" --gtest_filter='CudaGroupedGemm.AwkwardRouting' \
  >"$out/smoke.log" 2>&1
smoke_rc=$?
note "smoke (CudaGroupedGemm.AwkwardRouting): rc $smoke_rc ($(($(date +%s) - start)) s)"
if [ $smoke_rc -eq 124 ]; then
  fail "smoke test timed out (a hang?): stopping"
  tail -20 "$out/smoke.log"
  finish
fi
[ $smoke_rc -eq 0 ] || fail "smoke test"
filter=${GEMM_TEST_FILTER:-'CudaGroupedGemm.*:CudaLayer.*'}
timeout $(($(left) - 60)) "$build/tests/cuda_test" --gtest_filter="$filter" >"$out/tests.log" 2>&1
rc=$?
note "tests ($filter): rc $rc ($(($(date +%s) - start)) s)"
[ $rc -eq 0 ] || fail "tests ($filter)"
! grep -q '\[  SKIPPED \]' "$out/tests.log" || fail "tests skipped"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|tests ran" "$out/tests.log" | tee -a "$summary"
grep -B3 -A12 -E "Failure|error:" "$out/tests.log" | head -60

: >"$out/bench.txt"
for dtype in fp8 bf16; do
  timeout $(($(left) - 30)) "$build/tools/moerun" bench-gemm --dtype "$dtype" --variant all \
    --repeat 20 >>"$out/bench.txt" 2>&1
  rc=$?
  note "bench-gemm $dtype: rc $rc ($(($(date +%s) - start)) s)"
  [ $rc -eq 0 ] || fail "bench-gemm $dtype"
done
grep -vE "^bench-gemm: " "$out/bench.txt" | tee -a "$summary"

if [ "${GEMM_SANITIZE:-1}" = 1 ]; then
  quick='CudaGroupedGemm.AwkwardRouting:CudaGroupedGemm.OverlapCounters'
  tools=(memcheck racecheck synccheck)
  for i in "${!tools[@]}"; do
    sanitize "${tools[$i]}" "$out/sanitizer-${tools[$i]}.log" \
      $(($(left) / (${#tools[@]} - i) - 5)) "$build/tests/cuda_test" --gtest_filter="$quick"
  done
fi
finish
