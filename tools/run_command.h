// `moerun run`: one layer forward on synthetic inputs (or a checkpoint's layer), checked against
// the fp64 dense reference on a sample of rows (or all of them, or none).
#pragma once

#include <cstdint>
#include <string>

#include "checkpoint_run.h"

namespace CLI {
class App;
}

namespace moerun::tools {

struct RunArgs {
  std::string model = "small";
  std::int64_t tokens = -1;  // -1: default_tokens() for the layer and backend
  std::string reference;     // full | sampled | none; empty: sampled (none with --ep-rank)
  int ep_size = 1;
  std::string ep_backend = "standard";  // standard | all-to-all (with ep_size > 1)
  std::string layout = "auto";
  std::string backend = "auto";
  std::uint64_t seed = 0;
  int repeat = 1;
  bool json = false;
  bool no_finite_checks = false;  // LayerOptions::check_finite off (and the loader's checks)
  CheckpointRunArgs checkpoint;   // --model DIR only
};

void add_run_command(CLI::App& app, RunArgs& args);
// Returns the process exit code (exit_codes.h): 0 when the error is within tolerance (or not
// checked), 1 when it is not; throws on bad input or a failure.
int run_command(const RunArgs& args);

}  // namespace moerun::tools
