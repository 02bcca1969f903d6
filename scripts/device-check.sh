#!/usr/bin/env bash
# Build and check moerun on a GPU machine, in one go; exits 1 when anything fails, is skipped or is
# reported by a sanitizer, 0 only when everything ran and passed:
#   1. configure + build (Release, sm_90a, warnings as errors; GoogleTest / nlohmann-json / CLI11
#      from MOERUN_DEPS_DIR when the machine has no packages);
#   2. the gate: with the GPU hidden (CUDA_VISIBLE_DEVICES=-1) a GPU test must fail, not skip
#      (MOERUN_REQUIRE_GPU=1, exported for every step), or a skip could pass this check;
#   3. every test, GPU ones included, with no test skipped;
#   4. the kernels' resources (no stack frame: local memory 0) and the GEMMs' SASS (tensor-core
#      instructions, no local memory: scripts/check-sass.sh);
#   5. compute-sanitizer, the three at once: memcheck over the whole GPU suite (ctest -L gpu, each
#      test process traced), racecheck and synccheck over a set that launches every kernel and
#      every GEMM variant (both layouts, with and without overlap counters) at least once.
#
# Usage: scripts/device-check.sh [deps_dir]
#   deps_dir   googletest/, include/nlohmann, include/CLI (default: ../deps beside this checkout,
#              i.e. .carry/deps when the checkout is .carry/wt); empty = use installed packages.
# Environment: OUT (log folder; default ./device-logs), MOERUN_BUILD_DIR (default
#   /tmp/moerun-build), CHECK_BUDGET_S (seconds this script may take, default 560; the sanitizers
#   get what is left, a step that cannot finish in it fails), MOERUN_CPU_THREADS (default: all
#   cores).
# Writes 8 files to $OUT: build.log gate.log ctest.log resources.txt (with the SASS check)
#   sanitizer-{memcheck,racecheck,synccheck}.log summary.txt.
set -uo pipefail
default_budget=560
source "$(dirname "$0")/device-common.sh"
build_targets

# 2. The gate: a hidden GPU makes a GPU test fail, in GoogleTest and through the CLI's scripts.
{
  CUDA_VISIBLE_DEVICES=-1 "$build/tests/cuda_test" --gtest_filter='CudaRouting.ZeroTokens'
  echo "gtest rc $?"
  CUDA_VISIBLE_DEVICES=-1 ctest --test-dir "$build" -R '^cli\.gpu\.run_cuda$' --output-on-failure
  echo "ctest rc $?"
} >"$out/gate.log" 2>&1
if grep -q "gtest rc 0" "$out/gate.log" || grep -q "ctest rc 0" "$out/gate.log" ||
  ! grep -q "MOERUN_REQUIRE_GPU=1" "$out/gate.log"; then
  fail "gate: a GPU test passed or skipped with the GPU hidden (see gate.log)"
else
  note "gate: with the GPU hidden, GPU tests fail (MOERUN_REQUIRE_GPU=1)"
fi

# 3. Every test; none may be skipped.
ctest --test-dir "$build" --output-on-failure -j8 --timeout 240 >"$out/ctest.log" 2>&1
rc=$?
note "ctest (all tests, gpu label included): rc $rc ($(($(date +%s) - start)) s)"
grep -E "tests passed|tests failed|The following tests|Failed|Not Run|\*\*\*" "$out/ctest.log" |
  head -30 | tee -a "$summary"
skipped=$(grep -cE '\*\*\*Skipped|\[  SKIPPED \]' "$out/ctest.log")
[ $rc -eq 0 ] || fail "ctest rc $rc"
[ "$skipped" -eq 0 ] || fail "ctest: $skipped tests skipped"
[ "$(grep -c 'Test #' "$out/ctest.log")" -gt 0 ] || fail "ctest ran no test"

# 4. Kernels must not spill to local memory (STACK is the per-thread stack frame in bytes).
cuobjdump -res-usage "$build/src/libmoerun.a" >"$out/resources.txt" 2>&1 || fail "cuobjdump"
stacks=$(grep -c 'STACK:[1-9]' "$out/resources.txt")
note "kernels with a stack frame: $stacks"
[ "$stacks" -eq 0 ] || fail "$stacks kernels with a stack frame"
sass=$(bash "$repo/scripts/check-sass.sh" "$build/src/libmoerun.a" 2>&1) ||
  fail "check-sass (see resources.txt)"
printf '\n%s\n' "$sass" >>"$out/resources.txt"
note "sass check: $(grep -c ': ok ' <<<"$sass") kernels ok, $(grep -c 'FAIL' <<<"$sass") failed"

# 5. The sanitizers, concurrently on the one GPU, each within what is left of the budget.
every_kernel='CudaRouting.*:CudaDispatch.*:CudaPermute.MatchesOracleBitwise:CudaSiluAndMul.*'
every_kernel+=':CudaCombine.*:CudaFiniteCheck.KeepsTheFirstFindingOverSeveralLaunches'
every_kernel+=':CudaGroupedGemm.GroupSizes:CudaGroupedGemm.OverlapCounters'
every_kernel+=':CudaLayer.AwkwardRouting:CudaLayer.LayoutsOverlapAndRerunsAgreeBitwise'
every_kernel+=':CudaLayerFinite.GraphReplaysAreCheckedAndReportedAfterTheSync'
every_kernel+=':CudaEngineApi.ExpertMapAndLocalIds:CudaEngineApi.PrequantizedFp8InputEqualsQuantizingInside'
slot=$(($(left) - 10))
sanitize memcheck "$out/sanitizer-memcheck.log" "$slot" \
  ctest --test-dir "$build" -L gpu -j4 --output-on-failure &
memcheck=$!
sanitize racecheck "$out/sanitizer-racecheck.log" "$slot" \
  "$build/tests/cuda_test" --gtest_filter="$every_kernel" &
racecheck=$!
sanitize synccheck "$out/sanitizer-synccheck.log" "$slot" \
  "$build/tests/cuda_test" --gtest_filter="$every_kernel" &
synccheck=$!
# Each ran in a subshell: their verdicts come back through the summary they appended to.
for pid in $memcheck $racecheck $synccheck; do wait "$pid"; done
failures=$((failures + $(grep -c '^FAIL: sanitizer' "$summary")))
finish
