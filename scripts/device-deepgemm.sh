#!/usr/bin/env bash
# On a GPU machine, after moerun is built: builds DeepGEMM from the sources scripts/prepare-deepgemm.sh
# assembled (about 80 s on 16 cores), then times it beside `moerun bench-gemm` in the same process
# sequence (bench/deepgemm_side_by_side.py). Exits non-zero when the build, a DeepGEMM or moerun
# run, or a correctness check fails.
# NOTE: the preload of the system libstdc++ is needed on the device image: without it DeepGEMM's
# extension crashes at its first call (its iostreams bind to another libstdc++; torch 2.11).
# Usage: scripts/device-deepgemm.sh [DEEPGEMM_SRC] [side-by-side options: --dtype=fp8,bf16 ...]
#   DEEPGEMM_SRC default .carry/deepgemm; MOERUN_BIN default $MOERUN_BUILD_DIR/tools/moerun
#   (MOERUN_BUILD_DIR default /tmp/moerun-build). Writes $OUT/deepgemm_side_by_side.{txt,json}.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$repo/.carry/deepgemm
if [ $# -gt 0 ] && [[ $1 != --* ]]; then src=$1; shift; fi
moerun=${MOERUN_BIN:-${MOERUN_BUILD_DIR:-/tmp/moerun-build}/tools/moerun}
out=${OUT:-.}
export NCCL_NVLS_ENABLE=0
[ -x "$moerun" ] || { echo "device-deepgemm: no moerun binary at $moerun"; exit 1; }
[ -f "$src/setup.py" ] || { echo "device-deepgemm: no DeepGEMM sources at $src"; exit 1; }
start=$(date +%s)
rm -rf /tmp/dg && cp -r "$src" /tmp/dg && cd /tmp/dg || exit 1
ln -sfn /tmp/dg/third-party/cutlass/include/cutlass deep_gemm/include/cutlass
ln -sfn /tmp/dg/third-party/cutlass/include/cute deep_gemm/include/cute
DG_USE_LOCAL_VERSION=0 MAX_JOBS=$(nproc) python3 setup.py build >/tmp/dg/build.log 2>&1
rc=$?
so=$(find build -name "_C*.so" -type f | head -n 1)
echo "device-deepgemm: DeepGEMM build rc $rc in $(($(date +%s) - start)) s"
if [ $rc -ne 0 ] || [ -z "$so" ]; then
  tail -30 /tmp/dg/build.log
  exit 1
fi
cp "$so" deep_gemm/
cd "$repo" || exit 1
PYTHONPATH=/tmp/dg LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6) PYTHONUNBUFFERED=1 \
  python3 bench/deepgemm_side_by_side.py "$moerun" "$@" 2>&1 | tee "$out/deepgemm_side_by_side.txt"
exit "${PIPESTATUS[0]}"
