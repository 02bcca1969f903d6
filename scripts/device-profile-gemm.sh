#!/usr/bin/env bash
# ncu on grouped GEMM variants, one shape (clocks left alone): tensor-pipe and L2/DRAM throughput,
# warp stall reasons; the evidence behind docs/gemm.md's profile notes. Run after a build into
# MOERUN_BUILD_DIR (e.g. scripts/device-gemm.sh).
# Usage: scripts/device-profile-gemm.sh DTYPE SHAPE VARIANT...
#   e.g. scripts/device-profile-gemm.sh fp8 contiguous:4:8192:4096:7168 fp8_M128N128 fp8_M128N192
# Environment: OUT (default ./device-logs), MOERUN_BUILD_DIR (default /tmp/moerun-build).
# Writes $OUT/ncu-VARIANT.txt; prints the key lines. Exits non-zero when a profile fails.
set -uo pipefail
[ $# -ge 3 ] || { sed -n 2,8p "$0"; exit 2; }
dtype=$1 shape=$2
shift 2
out=${OUT:-./device-logs}
build=${MOERUN_BUILD_DIR:-/tmp/moerun-build}
mkdir -p "$out"
status=0
metrics=sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_elapsed
metrics+=,lts__t_sectors.avg.pct_of_peak_sustained_elapsed,sm__cycles_elapsed.avg.per_second
metrics+=,lts__t_bytes.sum.per_second,dram__bytes.sum.per_second,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum
for variant in "$@"; do
  timeout 150 ncu --clock-control none --kernel-name regex:grouped_gemm --launch-skip 3 \
    --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --metrics "$metrics" \
    "$build/tools/moerun" bench-gemm --dtype "$dtype" --shape "$shape" --variant "$variant" \
    --repeat 3 --skip-ceilings >"$out/ncu-$variant.txt" 2>&1
  rc=$?
  echo "ncu $variant $shape: rc $rc"
  [ $rc -eq 0 ] || status=1
  grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Issued Warp|No Eligible|Warp Cycles Per Issued|gmma_cycles|lts__t_sectors|lts__t_bytes|dram__bytes|wavefronts|Stall" \
    "$out/ncu-$variant.txt" | head -40
done
exit $status
