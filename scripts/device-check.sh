#!/usr/bin/env bash
# Build and check moerun on a GPU machine, in one go:
#   configure + build (Release, sm_90a, warnings as errors; GoogleTest / nlohmann-json / CLI11 from
#   MOERUN_DEPS_DIR when the machine has no packages), every test (GPU ones included), the kernels'
#   resource usage (local memory must be 0), then compute-sanitizer memcheck, racecheck and
#   synccheck over a quick subset of the GPU tests.
#
# Usage: scripts/device-check.sh [deps_dir]
#   deps_dir   googletest/, include/nlohmann, include/CLI (default: ../deps beside this checkout,
#              i.e. .carry/deps when the checkout is .carry/wt); empty = use installed packages.
# Environment: OUT (log folder; default ./device-logs), MOERUN_BUILD_DIR (default
#   /tmp/moerun-build), CHECK_BUDGET_S (seconds this script may take, default 390; the sanitizer
#   runs share what is left), MOERUN_CPU_THREADS (default: all cores).
# Writes at most 8 files to $OUT: build.log ctest.log resources.txt sanitizer-{memcheck,racecheck,
# synccheck}.log summary.txt.
set -uo pipefail
default_budget=390
source "$(dirname "$0")/device-common.sh"
build_targets

ctest --test-dir "$build" --output-on-failure -j8 --timeout 240 >"$out/ctest.log" 2>&1
note "ctest (all tests, gpu label included): rc $? ($(($(date +%s) - start)) s)"
grep -E "tests passed|tests failed|The following tests|Failed|Not Run|\*\*\*" "$out/ctest.log" |
  head -30 | tee -a "$summary"
note "gpu tests skipped: $(grep -c 'no usable CUDA device' "$out/ctest.log")"

# Kernels must not spill to local memory (STACK is the per-thread stack frame in bytes).
cuobjdump -res-usage "$build/src/libmoerun.a" >"$out/resources.txt" 2>&1
note "kernels with a stack frame: $(grep -c 'STACK:[1-9]' "$out/resources.txt")"

quick='CudaRouting.*:CudaDispatch.*:CudaPermute.MatchesOracleBitwise:CudaSiluAndMul.*'
quick+=':CudaCombine.OverlapWaitPassesThrough:CudaGroupedGemm.OverlapCounters'
quick+=':CudaGroupedGemm.AwkwardRouting:CudaLayer.AwkwardRouting:CudaLayer.LayoutsOverlapAndRerunsAgreeBitwise'
tools=(memcheck racecheck synccheck)
for i in "${!tools[@]}"; do
  tool=${tools[$i]}
  remaining=$(left)
  slot=$((remaining / (${#tools[@]} - i) - 5))
  if [ "$slot" -lt 20 ]; then
    note "sanitizer $tool: not run (budget spent)"
    continue
  fi
  timeout "$slot" compute-sanitizer --tool "$tool" --error-exitcode 9 \
    "$build/tests/cuda_test" --gtest_filter="$quick" >"$out/sanitizer-$tool.log" 2>&1
  rc=$?
  note "sanitizer $tool: rc $rc (0 clean, 9 errors found, 124 timed out after ${slot}s)" \
    "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer-$tool.log" | tail -1)" \
    "tests run: $(grep -c '^\[       OK \]' "$out/sanitizer-$tool.log") ok," \
    "$(grep -c '^\[  FAILED  \]' "$out/sanitizer-$tool.log") failed"
done
note "total: $(($(date +%s) - start)) s"
