#!/usr/bin/env bash
# The Python package's part of the test suite: builds and installs python/ into the venv of
# scripts/python-env.sh (with the CUDA backend when nvcc is found, as scripts/build.sh), checks that
# its native module needs no torch symbol, and runs its tests (torch's skip without torch).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/python-env.sh)
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
echo "python: building and installing python/ (build dir build/python)"
"$python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  ./python -C build-dir="$PWD/build/python"
module=$(cd /tmp && "$python" -c "import moerun._C as m; print(m.__file__)")
bash scripts/check-no-torch-symbols.sh "$module"
"$python" -m pytest -q python/tests
