// moerun: the command-line tool. `moerun run` with no arguments runs the default job.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "bench_command.h"
#include "bench_gemm_command.h"
#include "ep_check_command.h"
#include "info_command.h"
#include "moerun/errors.h"
#include "run_command.h"

int main(int argc, char** argv) {
  CLI::App app{"moerun: the Mixture-of-Experts layer on Hopper GPUs, with a CPU reference"};
  app.require_subcommand(1);
  moerun::tools::RunArgs run_args;
  moerun::tools::add_run_command(app, run_args);
  moerun::tools::InfoArgs info_args;
  moerun::tools::add_info_command(app, info_args);
  moerun::tools::BenchArgs bench_args;
  moerun::tools::add_bench_command(app, bench_args);
  moerun::tools::BenchGemmArgs bench_gemm_args;
  moerun::tools::add_bench_gemm_command(app, bench_gemm_args);
  moerun::tools::EpCheckArgs ep_check_args;
  moerun::tools::add_ep_check_command(app, ep_check_args);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (app.got_subcommand("run")) return moerun::tools::run_command(run_args);
    if (app.got_subcommand("info")) return moerun::tools::info_command(info_args);
    if (app.got_subcommand("bench")) return moerun::tools::bench_command(bench_args);
    if (app.got_subcommand("ep-check")) return moerun::tools::ep_check_command(ep_check_args);
    if (app.got_subcommand("bench-gemm")) {
      return moerun::tools::bench_gemm_command(bench_gemm_args);
    }
  } catch (const moerun::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moerun: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
