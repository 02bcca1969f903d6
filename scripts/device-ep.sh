#!/usr/bin/env bash
# Expert parallelism on a GPU machine, in one go: build (Release, sm_90a, warnings as errors), the
# EP GPU tests (virtual ranks R = 2, 4, 8; the one-rank NCCL group), compute-sanitizer memcheck and
# racecheck over a quick subset of them, `moerun ep-check` over every visible GPU (one process per
# GPU; skipped with a note on a single GPU), then `moerun bench --ep-backend` for DeepSeek-V3 at
# EP_TOKENS per rank, both backends, overlap off and on: virtual ranks on GPU 0 (EP_SIZE, default
# 8) and, with 2+ GPUs, real ranks over NCCL on all of them. Exits non-zero when any step fails
# (a GPU test that skips fails too: MOERUN_REQUIRE_GPU=1 from device-common.sh).
#
# Usage: scripts/device-ep.sh [deps_dir]   (deps default: ../deps beside this checkout)
# Environment: OUT (logs; default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build),
#   CHECK_BUDGET_S (default 540), EP_SIZE (default 8), EP_TOKENS (default 128,4096).
# Writes to $OUT: build.log tests.log sanitizer.log ep-check.log bench-ep.txt bench-ep.json
#   summary.txt.
set -uo pipefail
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off: it can take shared GPUs out of service
default_budget=540
source "$(dirname "$0")/device-common.sh"
build_targets moerun_cli cuda_test ep_nccl_test

ep_tests='CudaEp*'
timeout 240 "$build/tests/cuda_test" --gtest_filter="$ep_tests" >"$out/tests.log" 2>&1
rc=$?
note "cuda_test ($ep_tests): rc $rc ($(($(date +%s) - start)) s)"
[ $rc -eq 0 ] || fail "cuda_test ($ep_tests): rc $rc"
timeout 60 "$build/tests/ep_nccl_test" >>"$out/tests.log" 2>&1
rc=$?
note "ep_nccl_test (one-rank NCCL group): rc $rc"
[ $rc -eq 0 ] || fail "ep_nccl_test: rc $rc"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|SEED" "$out/tests.log" | grep -v SEED | tee -a "$summary"
grep -B3 -A12 -E "Failure" "$out/tests.log" | head -60

quick='Cases/CudaEpAllToAll.*/deepseek_R4_alltoall_masked_RoundRobin:Cases/CudaEp*/qwen3_R2_*:CudaEpErrors.*'
: >"$out/sanitizer.log"
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool "$tool" --error-exitcode 9 "$build/tests/cuda_test" \
    --gtest_filter="$quick" >>"$out/sanitizer.log" 2>&1
  rc=$?
  note "sanitizer $tool: rc $rc (0 clean, 9 errors, 124 timed out)" \
    "$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer.log" | tail -1)"
  [ $rc -eq 0 ] || fail "sanitizer $tool: rc $rc"
done

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
timeout 240 "$build/tools/moerun" ep-check --ep-size "$((gpus > 1 ? gpus : 2))" \
  --allow-fewer-gpus >"$out/ep-check.log" 2>&1
rc=$?
note "ep-check over $gpus GPUs: rc $rc $(tail -1 "$out/ep-check.log")"
[ $rc -eq 0 ] || fail "ep-check: rc $rc"

tokens=${EP_TOKENS:-128,4096}
ranks=${EP_SIZE:-8}
: >"$out/bench-ep.txt"
for backend in all-to-all standard; do
  "$build/tools/moerun" bench --model deepseek-v3 --ep-size "$ranks" --ep-backend "$backend" \
    --tokens "$tokens" --repeat 20 >>"$out/bench-ep.txt" 2>&1
  rc=$?
  note "bench virtual EP $ranks $backend: rc $rc"
  [ $rc -eq 0 ] || fail "bench virtual EP $ranks $backend: rc $rc"
  if [ "$gpus" -gt 1 ]; then
    "$build/tools/moerun" bench --model deepseek-v3 --ep-size "$gpus" --ep-backend "$backend" \
      --ep-transport nccl --tokens "$tokens" --repeat 20 >>"$out/bench-ep.txt" 2>&1
    rc=$?
    note "bench NCCL EP $gpus $backend: rc $rc"
    [ $rc -eq 0 ] || fail "bench NCCL EP $gpus $backend: rc $rc"
  fi
done
"$build/tools/moerun" bench --model deepseek-v3 --ep-size "$ranks" --ep-backend all-to-all \
  --tokens "$tokens" --repeat 20 --json >"$out/bench-ep.json" 2>>"$out/bench-ep.txt" ||
  fail "bench virtual EP --json: rc $?"
cat "$out/bench-ep.txt"
finish
