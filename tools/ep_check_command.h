// `moerun ep-check`: expert parallelism over NCCL on this machine's GPUs (one process per GPU)
// against the single-rank layer on each rank's own GPU: both backends, both layouts, FP8 and
// BF16, a moerun-made communicator and a caller's, overlap on and off; bitwise where the
// reduction order is the same (all-to-all), within tolerance otherwise (standard).
#pragma once

#include <cstdint>

namespace CLI {
class App;
}

namespace moerun::tools {

struct EpCheckArgs {
  int ep_size = 2;
  std::int64_t tokens = 40;  // per rank (the last rank holds none)
  std::uint64_t seed = 1;
  // Exit 0 with a note instead of failing where fewer than ep_size GPUs are visible.
  bool allow_fewer_gpus = false;
};

void add_ep_check_command(CLI::App& app, EpCheckArgs& args);
// 0 when every case of every rank passed; 1 on a mismatch; 2 on an error.
int ep_check_command(const EpCheckArgs& args);

}  // namespace moerun::tools
