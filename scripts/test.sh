#!/usr/bin/env bash
# Quick start, step 2: build (installing what is missing) and run the test suite: the C++ tests
# (ctest), then the Python package's (scripts/python-test.sh: build, no-torch-symbols check,
# pytest). GPU tests (ctest label `gpu`) skip themselves without a GPU; their reasons are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --preset default -j "$(nproc)"
if ctest --preset default -N -L gpu | grep -q "Total Tests: [1-9]"; then
  echo "GPU tests (label gpu):"
  ctest --preset default -L gpu --verbose 2>&1 | grep -E "SKIPPED|Skipped|no CUDA device|Passed|Failed" | sort -u || true
fi
bash scripts/python-test.sh
