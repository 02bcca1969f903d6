#!/usr/bin/env bash
# ncu on the non-GEMM stage kernels at T 8192 (one launch each, no graph, clocks unlocked): the
# evidence behind docs/cuda-backend.md's bandwidth notes. Run after a build into
# MOERUN_BUILD_DIR (e.g. scripts/device-stages.sh).
# Usage: scripts/device-profile-stages.sh [regex of kernel names]   (default: routing and SiLU)
# Environment: OUT (default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build).
# Exits 1 when an ncu run fails.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
failed=0
out=${OUT:-./device-logs}
build=${MOERUN_BUILD_DIR:-/tmp/moerun-build}
kernels=${1:-route_kernel|silu_and_mul}
mkdir -p "$out"
for model in deepseek-v3 qwen3-30b-a3b; do
  ep=1
  [ "$model" = deepseek-v3 ] && ep=8
  timeout 120 ncu --clock-control none --kernel-name "regex:$kernels" --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis \
    "$build/tools/moerun" bench --model "$model" --ep-size "$ep" --tokens 8192 --repeat 1 \
    --no-graph --skip-ceilings >"$out/ncu-$model.txt" 2>&1
  rc=$?
  echo "ncu $model: rc $rc"
  [ $rc -eq 0 ] || failed=1
  grep -E "route_kernel|silu_and_mul|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Block Limit|Stall|Issued Warp|No Eligible|Compute \(SM\) Throughput|Grid Size|Theoretical Occ" \
    "$out/ncu-$model.txt" | head -60
done
exit $failed
