#!/usr/bin/env bash
# Fails when a binary needs any symbol or library of torch (c10::, at::, torch::, caffe2::, or a
# libtorch*/libc10* NEEDED entry): a binding compiled against torch's C++ headers breaks at every
# torch release (DeepGEMM's wheel fails on torch 2.11 with an undefined c10 symbol). First proves
# on a small library with one such reference that the check can fail.
# Usage: scripts/check-no-torch-symbols.sh MODULE.so
set -euo pipefail
module=$1

torch_refs() {
  { nm -D --undefined-only "$1" | c++filt | grep -E '(c10|at|torch|caffe2)::' || true
    readelf -d "$1" | grep NEEDED | grep -Ei 'libtorch|libc10' || true; }
}

probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'namespace c10 { void needed(); } void use() { c10::needed(); }' |
  g++ -shared -fPIC -x c++ - -o "$probe/probe.so"
if [[ -z $(torch_refs "$probe/probe.so") ]]; then
  echo "check-no-torch-symbols: the check missed a c10 reference in its probe" >&2
  exit 1
fi

found=$(torch_refs "$module")
if [[ -n $found ]]; then
  echo "check-no-torch-symbols: $module needs torch:" >&2
  echo "$found" >&2
  exit 1
fi
echo "check-no-torch-symbols: $(basename "$module") needs no torch symbol or library; NEEDED:" \
  "$(readelf -d "$module" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
