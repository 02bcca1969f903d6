// The moerun CLI's exit codes (docs/USAGE.md, "Exit codes"), one place for every command.
#pragma once

#include <functional>

namespace moerun::tools {

enum ExitCode : int {
  kExitOk = 0,
  // A result checked against its reference was out of tolerance (`run`, `run --check`, the
  // sampled check of `bench-gemm`).
  kExitCheckFailed = 1,
  // The input is wrong: an argument (CLI11's parse and validation errors included), a file, a
  // value (non-finite weights, an output path that is an input, ...). The message names it.
  kExitBadInput = 2,
  // The machine could not do it: no usable CUDA device, a CUDA error, out of host or device
  // memory, a full disk. The message says what was being done.
  kExitResource = 3,
};

// Runs a command, printing the message of what it throws on stderr and returning the exit code
// of its kind: moerun::ResourceError and std::bad_alloc -> 3, any other exception -> 2.
int run_with_exit_codes(const std::function<int()>& command);

}  // namespace moerun::tools
