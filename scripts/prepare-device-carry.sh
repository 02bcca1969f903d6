#!/usr/bin/env bash
# Copies this worktree and the dependencies the GPU machine lacks into <main>/.carry (git-ignored
# there), which the device tool sends along with `carry: [".carry"]`:
#   .carry/<checkout name>       this checkout (no build/, no .git), e.g. .carry/main
#   .carry/deps/googletest       /usr/src/googletest
#   .carry/deps/include/{nlohmann,CLI}
# Then, on the device: .carry/<name>/scripts/device-check.sh   (deps default to .carry/deps)
# Several worktrees can each keep their copy there; deps are shared.
# Usage: scripts/prepare-device-carry.sh [main_checkout]   (default: the main worktree of this
#   repository, the one the device tool copies)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
main=${1:-$(dirname "$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir)")}
carry=$main/.carry
name=$(basename "$repo")
rm -rf "${carry:?}/$name" "$carry/deps"
mkdir -p "$carry/$name" "$carry/deps/include"
# The tracked and untracked files of this checkout, without build outputs (no rsync here).
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$carry/$name")
cp -r /usr/src/googletest "$carry/deps/googletest"
cp -r /usr/include/nlohmann "$carry/deps/include/nlohmann"
cp -r /usr/include/CLI "$carry/deps/include/CLI"
du -sh "$carry"
