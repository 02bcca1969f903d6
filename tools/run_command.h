// `moerun run`: one layer forward on synthetic inputs, checked against the fp64 dense reference.
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
  std::int64_t tokens = 256;
  int ep_size = 1;
  std::string ep_backend = "standard";  // standard | all-to-all (with ep_size > 1)
  std::string layout = "auto";
  std::string backend = "auto";
  std::uint64_t seed = 0;
  int repeat = 1;
  bool json = false;
  CheckpointRunArgs checkpoint;  // --model DIR only
};

void add_run_command(CLI::App& app, RunArgs& args);
// Returns the process exit code: 0 when the error is within tolerance, 1 when it is not.
int run_command(const RunArgs& args);

}  // namespace moerun::tools
