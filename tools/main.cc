// moerun: the command-line tool. `moerun run` with no arguments runs the default job. Every
// command exits with the codes of exit_codes.h.
#include <CLI/CLI.hpp>
#include <csignal>

#include "bench_command.h"
#include "bench_gemm_command.h"
#include "ep_check_command.h"
#include "exit_codes.h"
#include "info_command.h"
#include "run_command.h"

int main(int argc, char** argv) {
  using namespace moerun::tools;
  // A file size limit (ulimit -f) then fails the write with EFBIG, which the output file reports
  // (exit 3, its temporary file removed), instead of killing the process mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"moerun: the Mixture-of-Experts layer on Hopper GPUs, with a CPU reference"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok; 1 a result out of tolerance; 2 bad input (arguments, files, values; the "
      "message names it); 3 the machine failed (no usable CUDA device, a CUDA error, out of "
      "memory, a full disk).");
  RunArgs run_args;
  add_run_command(app, run_args);
  InfoArgs info_args;
  add_info_command(app, info_args);
  BenchArgs bench_args;
  add_bench_command(app, bench_args);
  BenchGemmArgs bench_gemm_args;
  add_bench_gemm_command(app, bench_gemm_args);
  EpCheckArgs ep_check_args;
  add_ep_check_command(app, ep_check_args);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // app.exit prints the message (or the help text, whose code is 0); CLI11's own codes (105,
    // 106, ...) are not moerun's: every parse or validation error is bad input.
    return app.exit(e) == 0 ? kExitOk : kExitBadInput;
  }
  return run_with_exit_codes([&] {
    if (app.got_subcommand("run")) return run_command(run_args);
    if (app.got_subcommand("info")) return info_command(info_args);
    if (app.got_subcommand("bench")) return bench_command(bench_args);
    if (app.got_subcommand("ep-check")) return ep_check_command(ep_check_args);
    // require_subcommand(1): the one left is bench-gemm.
    return bench_gemm_command(bench_gemm_args);
  });
}
