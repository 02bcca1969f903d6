#!/usr/bin/env bash
# The Python package on a GPU machine, in one go (no network):
#   build the wheel from python/ with the machine's scikit-build-core and nanobind (pip
#   --no-build-isolation; nlohmann-json from the deps dir), install it into a private folder,
#   check that its module needs no torch symbol, run the CPU suite (pytest, when pytest, NumPy and
#   ml_dtypes are installed; torch tests included) and the CUDA checks (python/tests/cuda_checks.py,
#   torch only: bitwise vs the native layer, graph capture/replay, torch.compile fullgraph,
#   opcheck, two layers on two streams, FP8 input, adapters, per-call host overhead).
# Exits non-zero on any failure, and on any skip (MOERUN_NO_SKIPS=1; no usable GPU is a failure).
#
# Usage: scripts/device-python.sh [deps_dir]   (default ../deps beside this checkout, i.e.
#   .carry/deps after scripts/prepare-device-carry.sh). Environment: OUT (log folder, default
#   ./device-logs), PYTHON (default python3), CHECK_BUDGET_S (default 540).
# Writes to $OUT: python-build.log, python-pytest.log, python-cuda.log,
#   python-cuda-results.json (host overhead medians), summary.txt.
set -uo pipefail
default_budget=540
source "$(dirname "$0")/device-common.sh"
python=${PYTHON:-python3}
export NCCL_NVLS_ENABLE=0
status=0
fail() { note "FAILED: $*"; status=1; }

work=$(mktemp -d /tmp/moerun-python.XXXXXX)
site=$work/site
deps_define=()
[ -n "$deps" ] && deps_define=(-C "cmake.define.MOERUN_DEPS_DIR=$(cd "$deps" && pwd)")
note "python: $("$python" --version 2>&1), torch $("$python" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)"
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
"$python" -m pip wheel -v --no-build-isolation --no-deps "$repo/python" -w "$work/wheels" \
  -C build-dir="$work/build" -C cmake.define.MOERUN_WARNINGS_AS_ERRORS=ON "${deps_define[@]}" \
  >"$out/python-build.log" 2>&1
rc=$?
note "wheel build: rc $rc ($(($(date +%s) - start)) s)"
if [ $rc -ne 0 ]; then
  grep -E "error|Error" "$out/python-build.log" | head -30
  exit 1
fi
"$python" -m pip install -q --no-deps --target "$site" "$work"/wheels/moerun-*.whl >>"$out/python-build.log" 2>&1 ||
  fail "wheel install"
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
module=$(cd /tmp && "$python" -c "import moerun._C as m; print(m.__file__)")
bash "$repo/scripts/check-no-torch-symbols.sh" "$module" 2>&1 | tee -a "$summary" ||
  fail "no-torch-symbols check"

export MOERUN_NO_SKIPS=1
if "$python" -c "import pytest, numpy, ml_dtypes" >/dev/null 2>&1; then
  (cd /tmp && timeout "$(left)" "$python" -m pytest -q -p no:cacheprovider "$repo/python/tests") \
    >"$out/python-pytest.log" 2>&1 || fail "CPU suite (python-pytest.log)"
  note "CPU suite: $(tail -1 "$out/python-pytest.log")"
else
  note "CPU suite: not run here (pytest, NumPy or ml_dtypes missing on this machine; CI runs it)"
fi
(cd /tmp && timeout "$(left)" "$python" "$repo/python/tests/cuda_checks.py" "$out") \
  >"$out/python-cuda.log" 2>&1 || fail "CUDA checks (python-cuda.log)"
grep -E "^\[  FAILED  \]|^[0-9]+ passed" "$out/python-cuda.log" | tee -a "$summary"
grep -A8 "host overhead per call" "$out/python-cuda.log" | tee -a "$summary"
note "total: $(($(date +%s) - start)) s, status $status"
exit $status
