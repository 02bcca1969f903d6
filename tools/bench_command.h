// `moerun bench`: times each stage and the whole layer on the CUDA backend at the benchmark models'
// shapes, against copy-bandwidth and matrix-rate ceilings measured in the same run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace moerun::tools {

struct BenchArgs {
  std::vector<std::string> models;   // empty: deepseek-v3, qwen3-30b-a3b, mixtral-8x7b
  std::vector<std::int64_t> tokens;  // empty: the sweep 1 .. 32768
  int ep_size = 1;
  std::string stage = "all";  // all | layer | one stage name
  std::string layout = "auto";
  int repeat = 30;
  std::uint64_t seed = 0;
  bool json = false;
  bool no_graph = false;
  bool no_finite_checks = false;
  bool skip_ceilings = false;
  // Expert parallelism over ep_size ranks (tools/bench_ep.h): "standard" or "all-to-all"; empty =
  // the stage table of one rank's share of the experts.
  std::string ep_backend;
  std::string ep_transport = "virtual";  // virtual (this GPU) | nccl (one process per GPU)
};

void add_bench_command(CLI::App& app, BenchArgs& args);
// Returns the process exit code: 0 when every case ran or was skipped with a reason.
int bench_command(const BenchArgs& args);

}  // namespace moerun::tools
