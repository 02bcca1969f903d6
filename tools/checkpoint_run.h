// `moerun run --model DIR`: one MoE layer of a Hugging Face checkpoint on given hidden states.
#pragma once

#include <string>

namespace CLI {
class App;
class Validator;
}  // namespace CLI

namespace moerun::tools {

struct RunArgs;

// The options of `moerun run` that only a checkpoint directory uses.
struct CheckpointRunArgs {
  int layer = -1;  // -1: the first MoE layer
  std::string input;
  std::string output;
  int ep_rank = -1;  // -1: every rank, simulated
  bool save_routing = false;
  std::string quantize = "none";
  bool check = false;

  bool any_set() const;
};

void add_checkpoint_run_options(CLI::App& run, CheckpointRunArgs& args);
// --model accepts a preset name or a directory holding config.json.
CLI::Validator model_validator();
bool is_checkpoint_dir(const std::string& model);
// Returns the process exit code: 0, or 1 when --check finds the error above tolerance.
int run_checkpoint(const RunArgs& args);

}  // namespace moerun::tools
