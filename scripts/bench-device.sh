#!/usr/bin/env bash
# Times the CUDA layer at the models' full shapes (bench/cuda_layer_bench) and lists per-kernel GPU
# times with ncu (clocks left alone) for a few cases; everything into $OUT/bench.txt.
# Usage (after scripts/device-check.sh built into MOERUN_BUILD_DIR): scripts/bench-device.sh
set -uo pipefail
build=${MOERUN_BUILD_DIR:-/tmp/moerun-build}
out=${OUT:-.}
f=$out/bench.txt
{
  nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv
  "$build/bench/cuda_layer_bench"
} >"$f" 2>&1
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__throughput.avg.pct_of_peak_sustained_elapsed
# The warm-up forward's kernels, after the fill kernels (6 for deepseek-v3, 3 for BF16 models).
for spec in deepseek-v3:6:128:masked deepseek-v3:6:4096:contiguous qwen3-30b-a3b:3:4096:contiguous; do
  IFS=: read -r model skip tokens layout <<<"$spec"
  echo "== ncu $model T $tokens $layout" >>"$f"
  BENCH_REPEAT=1 BENCH_CASES=$tokens:$layout timeout 150 ncu --clock-control none \
    --launch-skip "$skip" --launch-count 10 --metrics "$metrics" \
    "$build/bench/cuda_layer_bench" "$model" 2>&1 |
    grep -E "^  [a-z_]+.*\(|gpu__time_duration|dram__throughput|sm__throughput" >>"$f"
done
cat "$f"
