// Running the moerun binary from a test: exit code and output.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace moerun::test {

struct CliResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string output;  // stdout and stderr
};

// Runs the moerun binary; `output` holds stdout and, unless `stdout_only` (for --json), stderr.
// `env`: what the shell runs first, variable assignments ("CUDA_VISIBLE_DEVICES=-1 ") or commands
// ("ulimit -f 4; ").
inline CliResult run_cli(const std::string& args, bool stdout_only = false,
                         const std::string& env = "") {
  const std::string command =
      env + std::string(MOERUN_CLI_PATH) + " " + args + (stdout_only ? " 2>/dev/null" : " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  CliResult r;
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) r.output += buffer.data();
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The path in single quotes, for the shell.
inline std::string q(const std::filesystem::path& p) {
  std::string quoted = "'";  // built piecewise: GCC 12's -Wrestrict misfires on "'" + string
  quoted += p.string();
  quoted += "'";
  return quoted;
}

}  // namespace moerun::test
