#!/usr/bin/env bash
# Copies this worktree and the dependencies the GPU machine lacks into <main>/.carry (git-ignored
# there), which the device tool sends along with `carry: [".carry"]`:
#   .carry/wt                    this checkout (no build/, no .git)
#   .carry/deps/googletest       /usr/src/googletest
#   .carry/deps/include/{nlohmann,CLI}
# Then, on the device: .carry/wt/scripts/device-check.sh   (deps default to .carry/deps)
# Usage: scripts/prepare-device-carry.sh [main_checkout]   (default /work/main)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
main=${1:-/work/main}
carry=$main/.carry
rm -rf "$carry/wt" "$carry/deps"
mkdir -p "$carry/wt" "$carry/deps/include"
# The tracked and untracked files of this checkout, without build outputs (no rsync here).
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$carry/wt")
cp -r /usr/src/googletest "$carry/deps/googletest"
cp -r /usr/include/nlohmann "$carry/deps/include/nlohmann"
cp -r /usr/include/CLI "$carry/deps/include/CLI"
du -sh "$carry"
