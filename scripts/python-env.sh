#!/usr/bin/env bash
# Makes the Python environment the package is built and tested in: a venv (default build/python-venv)
# with the build backend and test tools from PyPI, by name: scikit-build-core, nanobind, numpy,
# ml_dtypes, pytest. torch is not installed (its tests skip without it). Installs Debian's
# python3-venv / python3-dev first where the interpreter lacks venv or its headers. Prints the venv's
# python. Does nothing that is already done.
# Environment: PYTHON (interpreter; default python3), MOERUN_VENV (venv folder).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=${MOERUN_VENV:-build/python-venv}
has_headers() {
  "$python" -c 'import sysconfig, os, sys
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)'
}
if ! "$python" -c "import venv, ensurepip" >/dev/null 2>&1 || ! has_headers; then
  bash scripts/setup.sh python3-venv python3-dev >&2
fi
if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import nanobind, scikit_build_core, numpy, ml_dtypes, pytest" \
  >/dev/null 2>&1; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "scikit-build-core>=1.1" "nanobind>=3.1" numpy ml_dtypes pytest >&2
fi
echo "$(cd "$venv" && pwd)/bin/python"
