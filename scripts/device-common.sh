# Sourced by the device scripts (device-check.sh, device-checkpoints.sh, device-ep.sh,
# device-gemm.sh, device-peers.sh, device-python.sh, device-stages.sh): their shared setup, build
# and verdict.
#
# Expects: default_budget (seconds) set by the caller; the caller's $1 is the deps dir.
# Sets: start, budget, repo, deps, out, build, summary, failures; defines note, fail, left,
# build_targets, sanitize, finish.
# Exports MOERUN_REQUIRE_GPU=1 (a GPU test that finds no usable device fails instead of skipping)
# and NCCL_NVLS_ENABLE=0 (never NVLink multicast).
start=$(date +%s)
budget=${CHECK_BUDGET_S:-$default_budget}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps=${1-$repo/../deps}
out=${OUT:-$repo/device-logs}
build=${MOERUN_BUILD_DIR:-/tmp/moerun-build}
export MOERUN_REQUIRE_GPU=1
export NCCL_NVLS_ENABLE=0
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
failures=0
note() { echo "$*" | tee -a "$summary"; }
# A step that failed: noted, counted, and the script's exit status becomes 1 (see finish).
fail() {
  note "FAIL: $*"
  failures=$((failures + 1))
}
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
    note "FAIL: build"
    exit 1
  fi
}

# sanitize TOOL LOG SECONDS COMMAND...: compute-sanitizer TOOL over COMMAND (child processes too)
# within SECONDS. Clean means: exit status 0 (the tests passed, no error found), not timed out,
# and the tool's summary present with nothing in it. Anything else is a failure.
sanitize() {
  local tool=$1 log=$2 seconds=$3
  shift 3
  if [ "$seconds" -lt 20 ]; then
    fail "sanitizer $tool: not run (budget spent)"
    return
  fi
  timeout "$seconds" compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 9 \
    "$@" >"$log" 2>&1
  local rc=$? clean
  case $tool in
    racecheck) clean='RACECHECK SUMMARY: 0 hazards displayed \(0 errors, 0 warnings\)' ;;
    *) clean='ERROR SUMMARY: 0 errors' ;;
  esac
  local summaries bad
  summaries=$(grep -cE 'ERROR SUMMARY|RACECHECK SUMMARY' "$log")
  bad=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | grep -cvE "$clean")
  note "sanitizer $tool: rc $rc (0 clean, 9 errors found, 124 timed out after ${seconds}s)," \
    "$summaries process summaries, $bad not clean; tests: $(grep -c '^\[       OK \]' "$log") ok," \
    "$(grep -c '^\[  FAILED  \]' "$log") failed ($(($(date +%s) - start)) s)"
  if [ $rc -ne 0 ] || [ "$summaries" -eq 0 ] || [ "$bad" -ne 0 ]; then
    fail "sanitizer $tool (see $(basename "$log"))"
    grep -E -B2 -A8 '^========= (Invalid|Race|Barrier|Error|Warning)|\[  FAILED  \]' "$log" | head -40
  fi
}

# The verdict: exit 0 only when no step failed.
finish() {
  note "total: $(($(date +%s) - start)) s"
  if [ "$failures" -ne 0 ]; then
    note "device check FAILED: $failures failed step(s)"
    exit 1
  fi
  note "device check passed"
  exit 0
}
