# Sourced by the device scripts (device-check.sh, device-gemm.sh): their shared setup and build.
#
# Expects: default_budget (seconds) set by the caller; the caller's $1 is the deps dir.
# Sets: start, budget, repo, deps, out, build, summary; defines note, left, build_targets.
start=$(date +%s)
budget=${CHECK_BUDGET_S:-$default_budget}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps=${1-$repo/../deps}
out=${OUT:-$repo/device-logs}
build=${MOERUN_BUILD_DIR:-/tmp/moerun-build}
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
left() { echo $((budget - ($(date +%s) - start))); }

# Configures (Release, sm_90a, warnings as errors; dependencies from $deps when given) and builds
# the given targets (all when none) into $build, logging to $out/build.log; exits on failure.
build_targets() {
  {
    nvidia-smi -L || true
    cmake --version | head -1
    nvcc --version | tail -2
    local deps_arg=()
    [ -n "$deps" ] && deps_arg=(-DMOERUN_DEPS_DIR="$(cd "$deps" && pwd)")
    cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_ARCHITECTURES=90a -DMOERUN_WARNINGS_AS_ERRORS=ON \
      -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "${deps_arg[@]}"
    ninja -C "$build" -j"$(nproc)" "$@"
  } >"$out/build.log" 2>&1
  local rc=$?
  note "build: rc $rc ($(($(date +%s) - start)) s)"
  if [ $rc -ne 0 ]; then
    grep -E "error|Error" "$out/build.log" | head -30
    tail -20 "$out/build.log"
    exit 1
  fi
}
