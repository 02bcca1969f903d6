#!/usr/bin/env bash
# Builds the libFuzzer target of the safetensors header parser with clang (ASan + UBSan, leak
# checks on) in its own build directory, and runs it from the committed seed corpus.
#
#   scripts/fuzz.sh                 # 60 s
#   FUZZ_SECONDS=600 scripts/fuzz.sh
#
# Needs clang++ and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev). Exit status is
# non-zero when the fuzzer finds a crash, a leak or a sanitizer report; the input that caused it
# is left in the build directory (crash-*, leak-*).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FUZZ_BUILD_DIR:-$root/build/fuzz}"
seconds="${FUZZ_SECONDS:-60}"
bash "$root/scripts/setup.sh" clang libclang-rt-14-dev
cxx="${FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}"
if [[ -z "$cxx" ]]; then
  echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi

cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOERUN_ENABLE_CUDA=OFF \
  -DMOERUN_BUILD_TESTS=OFF \
  -DMOERUN_BUILD_TOOLS=OFF \
  -DMOERUN_BUILD_FUZZERS=ON \
  -DMOERUN_WARNINGS_AS_ERRORS=ON
cmake --build "$build" --target safetensors_fuzz

# New inputs go to a scratch directory (the first one named), so the committed seeds stay put.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd "$build"
./tests/fuzz/safetensors_fuzz \
  -max_total_time="$seconds" \
  -max_len=4096 \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  -dict="$root/tests/fuzz/safetensors.dict" \
  "$scratch" "$root/tests/fuzz/corpus"
