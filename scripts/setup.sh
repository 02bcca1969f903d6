#!/usr/bin/env bash
# Installs what the build needs and is missing (Debian packages); does nothing when all is there.
# Extra package names given as arguments are installed too (scripts/fuzz.sh adds clang's).
# The CUDA toolkit is optional: with nvcc on PATH (or in /usr/local/cuda) the CUDA backend builds.
set -euo pipefail

packages=(cmake ninja-build g++ libgtest-dev nlohmann-json3-dev libcli11-dev "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: nvcc found in /usr/local/cuda/bin (add it to PATH to see it elsewhere)"
fi
