#!/usr/bin/env bash
# Here (no GPU needed): assembles DeepGEMM's sources, the peer moerun's grouped GEMMs are measured
# against, into a git-ignored folder that a device call carries (scripts/device-deepgemm.sh builds
# it there). DeepGEMM, CUTLASS and fmt come as bare git directories (e.g. the search tool's fetch
# of github:deepseek-ai/DeepGEMM, github:NVIDIA/cutlass, github:fmtlib/fmt); CUTLASS and fmt are
# taken at the commits DeepGEMM pins as its submodules. Nothing of it is ever committed here.
# Usage: scripts/prepare-deepgemm.sh DEEPGEMM_GIT CUTLASS_GIT FMT_GIT [OUT]  (OUT: .carry/deepgemm)
# Environment: DEEPGEMM_REV (default HEAD).
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,9p "$0"; exit 2; }
dg=$1 cutlass=$2 fmt=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${4:-$repo/.carry/deepgemm}
rev=${DEEPGEMM_REV:-HEAD}
rm -rf "$out"
mkdir -p "$out/third-party/cutlass" "$out/third-party/fmt"
git --git-dir="$dg" archive "$rev" | tar -x -C "$out"
pinned() { git --git-dir="$dg" ls-tree "$rev" "third-party/$1" | awk '{print $3}'; }
git --git-dir="$cutlass" archive "$(pinned cutlass)" include | tar -x -C "$out/third-party/cutlass"
git --git-dir="$fmt" archive "$(pinned fmt)" include | tar -x -C "$out/third-party/fmt"
echo "DeepGEMM $(git --git-dir="$dg" rev-parse --short "$rev") (cutlass $(pinned cutlass | cut -c1-7)," \
  "fmt $(pinned fmt | cut -c1-7)) -> $out, $(du -sh "$out" | cut -f1)"
