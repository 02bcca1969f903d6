#!/usr/bin/env bash
# Asserts that the grouped GEMM kernels run on Hopper's tensor-core instructions (issue 4): every
# BF16 variant's SASS holds HGMMA, every FP8 variant's QGMMA, and none touches local memory
# (LDL/STL: a register array spilled or indexed at run time).
#
# Usage: scripts/check-sass.sh [libmoerun.a or object]   (default build/default/src/libmoerun.a)
# cuobjdump: $CUOBJDUMP, else PATH, else /usr/local/cuda/bin (it needs nvdisasm beside it or on
# PATH). Prints one line per kernel; exit 1 when a check fails or no GEMM kernel is found.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$repo/build/default/src/libmoerun.a}
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)}
[ -x "$cuobjdump" ] || { echo "check-sass: no cuobjdump (set CUOBJDUMP)"; exit 1; }
sass=$(mktemp)
trap 'rm -f "$sass"' EXIT
"$cuobjdump" -sass "$binary" >"$sass"
# One record per function: name, HGMMA count, QGMMA count, LDL/STL count.
awk '
  /Function : / { if (name != "") print name, h, q, l; name = $3; h = q = l = 0; next }
  /HGMMA/ { h++ } /QGMMA/ { q++ } /[^A-Z]LDL|[^A-Z]STL/ { l++ }
  END { if (name != "") print name, h, q, l }
' "$sass" | grep grouped_gemm_kernel | {
  kernels=0
  failed=0
  while read -r name h q l; do
    kernels=$((kernels + 1))
    # GroupedGemmTraitsILb1E... = FP8 (kFp8 = true), ILb0E... = BF16.
    if [[ $name == *GroupedGemmTraitsILb1E* ]]; then want=QGMMA; got=$q; else want=HGMMA; got=$h; fi
    status=ok
    if [ "$got" -eq 0 ] || [ "$l" -ne 0 ]; then status=FAIL; failed=1; fi
    echo "check-sass: $status $want=$got local-memory-ops=$l $name"
  done
  if [ "$kernels" -eq 0 ]; then
    echo "check-sass: FAIL no grouped_gemm_kernel in $binary"
    exit 1
  fi
  exit $failed
}
