#!/usr/bin/env bash
# The grouped GEMMs beside DeepGEMM on a GPU machine, in one call: build moerun (Release, sm_90a),
# its GEMM GPU tests, DeepGEMM built from source and timed beside `moerun bench-gemm` under both
# protocols (scripts/device-deepgemm.sh), then ncu of both libraries' FP8 kernels on one shape
# (tensor pipe, L2, stalls, clock). Exits non-zero when anything fails.
# Usage: scripts/device-peers.sh [deps_dir] [deepgemm_src]  (defaults .carry/deps, .carry/deepgemm)
# Environment: OUT, MOERUN_BUILD_DIR (default /tmp/moerun-build), PEERS_SHAPES (a shapes file for
#   the side-by-side; default its full table), PROFILE_SHAPE (default contiguous:4:8192:4096:7168).
set -uo pipefail
default_budget=560
source "$(dirname "$0")/device-common.sh" "${1:-$(dirname "$0")/../.carry/deps}"
dg_src=${2:-$repo/.carry/deepgemm}
export NCCL_NVLS_ENABLE=0 MOERUN_REQUIRE_GPU=1
status=0
build_targets cuda_test moerun_cli
timeout 150 "$build/tests/cuda_test" --gtest_filter='CudaGroupedGemm.*:CudaLayer.*' \
  >"$out/tests.log" 2>&1 || { note "FAILED: GEMM/layer tests"; status=1; }
note "tests: $(grep -E '^\[  (PASSED|FAILED) ' "$out/tests.log" | tr '\n' ' ')"
shapes=()
[ -n "${PEERS_SHAPES:-}" ] && shapes=(--shapes="$PEERS_SHAPES")
# (it writes $OUT/deepgemm_side_by_side.{txt,json})
if ! MOERUN_BIN=$build/tools/moerun bash "$repo/scripts/device-deepgemm.sh" "$dg_src" \
  "${shapes[@]}" >/tmp/peers.log 2>&1; then
  note "FAILED: side by side"
  tail -20 /tmp/peers.log | tee -a "$summary"
  status=1
fi
note "side by side: $(($(date +%s) - start)) s"
# ncu: one launch of each library's kernel on the profile shape.
shape=${PROFILE_SHAPE:-contiguous:4:8192:4096:7168}
echo "$shape" >/tmp/profile-shape.txt
sections=(--section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis)
timeout 120 ncu --clock-control none --kernel-name regex:grouped_gemm --launch-skip 3 \
  --launch-count 1 "${sections[@]}" "$build/tools/moerun" bench-gemm --dtype fp8 --shape "$shape" \
  --repeat 3 --skip-ceilings >"$out/ncu-moerun.txt" 2>&1 || { note "FAILED: ncu moerun"; status=1; }
PYTHONPATH=/tmp/dg LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6) timeout 180 ncu \
  --clock-control none --kernel-name regex:fp8_gemm --launch-skip 3 --launch-count 1 \
  "${sections[@]}" python3 "$repo/bench/deepgemm_side_by_side.py" "$build/tools/moerun" \
  --dtype=fp8 --repeat=5 --no-kineto --shapes=/tmp/profile-shape.txt >"$out/ncu-deepgemm.txt" 2>&1 ||
  { note "FAILED: ncu DeepGEMM"; status=1; }
for f in moerun deepgemm; do
  note "ncu $f: $(grep -E 'Duration|SM Frequency|Compute \(SM\) Throughput|L2 Cache Throughput' \
    "$out/ncu-$f.txt" | awk '{print $1, $2, $(NF)}' | tr '\n' ';')"
done
note "total: $(($(date +%s) - start)) s, status $status"
exit $status
