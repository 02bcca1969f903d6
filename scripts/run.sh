#!/usr/bin/env bash
# Quick start, step 1: build (installing what is missing) and run the default job.
# Extra arguments go to `moerun run` (see `build/default/tools/moerun run --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
exec build/default/tools/moerun run "$@"
