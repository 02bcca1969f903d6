#!/usr/bin/env bash
# The grouped GEMM's device check, in one call (a subset of scripts/device-check.sh plus the
# benchmark): build cuda_test (Release, sm_90a, warnings as errors), the SASS check, kernel
# resources, the GEMM, layer and quantizer GPU tests, `moerun bench-gemm --variant all` (FP8 then
# BF16, back-to-back and kernel-only protocols), then compute-sanitizer memcheck/racecheck/synccheck
# on small GEMM tests while the budget lasts. Exits non-zero when anything fails or is skipped.
#
# Usage: scripts/device-gemm.sh [deps_dir]   (deps default: ../deps beside this checkout)
# Environment: OUT (logs; default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build),
#   CHECK_BUDGET_S (default 280), GEMM_TEST_FILTER (default: the GEMM, layer, permute and SiLU
#   tests), GEMM_BENCH_PROTOCOLS (default 'back-to-back kernel'), GEMM_SANITIZE (default 1),
#   MOERUN_CPU_THREADS.
# Writes to $OUT: build.log sass.txt resources.txt smoke.log tests.log bench.txt sanitizer.log
# summary.txt.
set -uo pipefail
default_budget=280
source "$(dirname "$0")/device-common.sh"
build_targets cuda_test moerun_cli

status=0
fail() { note "FAILED: $*"; status=1; }
bash "$repo/scripts/check-sass.sh" "$build/src/libmoerun.a" >"$out/sass.txt" 2>&1 ||
  fail "sass check"
note "sass check: $(grep -c ': ok ' "$out/sass.txt") kernels ok"
cuobjdump -res-usage "$build/src/libmoerun.a" 2>&1 | grep -A1 grouped_gemm_kernel >"$out/resources.txt"
note "gemm kernels: $(grep -o 'REG:[0-9]* STACK:[0-9]*' "$out/resources.txt" | tr '\n' ' ')"

# Smoke first, with a short limit: a kernel that hangs must not eat the whole budget.
timeout 90 "$build/tests/cuda_test" --gtest_filter='CudaGroupedGemm.AwkwardRouting' \
  >"$out/smoke.log" 2>&1
smoke_rc=$?
note "smoke (CudaGroupedGemm.AwkwardRouting): rc $smoke_rc ($(($(date +%s) - start)) s)"
if [ $smoke_rc -eq 124 ]; then
  note "smoke test timed out (a hang?): stopping"
  tail -20 "$out/smoke.log"
  exit 1
fi
filter=${GEMM_TEST_FILTER:-'CudaGroupedGemm.*:CudaLayer.*:CudaPermute.*:CudaSiluAndMul.*'}
timeout $(($(left) - 60)) "$build/tests/cuda_test" --gtest_filter="$filter" >"$out/tests.log" 2>&1
rc=$?
note "tests ($filter): rc $rc ($(($(date +%s) - start)) s)"
[ $rc -eq 0 ] || fail "tests"
grep -q "SKIPPED" "$out/tests.log" && fail "a GPU test was skipped on the GPU machine"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|tests ran" "$out/tests.log" | tee -a "$summary"
grep -B3 -A12 -E "Failure|error:" "$out/tests.log" | head -60

: >"$out/bench.txt"
for protocol in ${GEMM_BENCH_PROTOCOLS:-back-to-back kernel}; do
  for dtype in fp8 bf16; do
    timeout $(($(left) - 30)) "$build/tools/moerun" bench-gemm --dtype "$dtype" --variant all \
      --protocol "$protocol" --repeat 20 >>"$out/bench.txt" 2>&1
    rc=$?
    note "bench-gemm $dtype $protocol: rc $rc ($(($(date +%s) - start)) s)"
    [ $rc -eq 0 ] || fail "bench-gemm $dtype $protocol"
  done
done
grep -vE "^bench-gemm: " "$out/bench.txt" | tee -a "$summary"

if [ "${GEMM_SANITIZE:-1}" = 1 ]; then
  quick='CudaGroupedGemm.AwkwardRouting:CudaGroupedGemm.OverlapCounters'
  : >"$out/sanitizer.log"
  tools=(memcheck racecheck synccheck)
  for i in "${!tools[@]}"; do
    tool=${tools[$i]}
    slot=$(($(left) / (${#tools[@]} - i) - 5))
    if [ "$slot" -lt 20 ]; then
      fail "sanitizer $tool: not run (budget spent)"
      continue
    fi
    timeout "$slot" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$build/tests/cuda_test" --gtest_filter="$quick" >>"$out/sanitizer.log" 2>&1
    rc=$?
    note "sanitizer $tool: rc $rc (0 clean, 9 errors, 124 timed out after ${slot}s)" \
      "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer.log" | tail -1)"
    [ $rc -eq 0 ] || fail "sanitizer $tool"
  done
fi
note "total: $(($(date +%s) - start)) s, status $status"
exit $status
