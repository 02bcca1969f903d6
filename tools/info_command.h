// `moerun info --model DIR`: what a Hugging Face MoE checkpoint holds, checked against its
// config.json, and (--bench-load) how fast one layer loads from a warm page cache.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace moerun::tools {

struct InfoArgs {
  std::string model;
  int layer = -1;  // -1: every layer (and the first MoE layer for --bench-load)
  bool bench_load = false;
  int repeat = 5;
  bool json = false;
};

void add_info_command(CLI::App& app, InfoArgs& args);
int info_command(const InfoArgs& args);

}  // namespace moerun::tools
