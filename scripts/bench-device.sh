#!/usr/bin/env bash
# On a GPU machine, after scripts/device-check.sh built into MOERUN_BUILD_DIR: `moerun bench` (every
# stage and the layer; arguments passed through, default the full sweep of the three models) into
# $OUT/bench.txt and $OUT/bench.json, then per-kernel GPU times with ncu (clocks left alone) for a
# few cases, appended to bench.txt.
# Usage: scripts/bench-device.sh [moerun bench options...]
set -uo pipefail
build=${MOERUN_BUILD_DIR:-/tmp/moerun-build}
out=${OUT:-.}
moerun=$build/tools/moerun
f=$out/bench.txt
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv >"$f" 2>&1
"$moerun" bench "$@" 2>&1 | tee -a "$f"
"$moerun" bench --json "$@" >"$out/bench.json"
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__throughput.avg.pct_of_peak_sustained_elapsed
# One routing pass (the byte accounting's) and one forward of plain launches: 11 kernels.
for spec in deepseek-v3:128 deepseek-v3:8192 qwen3-30b-a3b:8192; do
  IFS=: read -r model tokens <<<"$spec"
  echo "== ncu $model T $tokens" >>"$f"
  timeout 150 ncu --clock-control none --kernel-name regex:'route|local|permute|gemm|silu|combine' \
    --launch-count 11 --metrics "$metrics" \
    "$moerun" bench --model "$model" --tokens "$tokens" --repeat 1 --no-graph --skip-ceilings 2>&1 |
    grep -E "^  [a-z_]+.*\(|gpu__time_duration|dram__throughput|sm__throughput" >>"$f"
done
cat "$f"
