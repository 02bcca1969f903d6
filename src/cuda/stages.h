// The stages of a forward (DESIGN.md), in launch order, as the CUDA layer marks them and
// `moerun bench` reports them. Plain C++: the CLI names them in builds without CUDA too.
#pragma once

#include <cstdint>
#include <string_view>

namespace moerun::cuda {

enum class Stage : std::uint8_t {
  kRouting,
  kDispatchPermute,
  kGateUp,
  kActivation,
  kDown,
  kCombine
};
inline constexpr int kNumStages = 6;

constexpr std::string_view stage_name(Stage stage) {
  switch (stage) {
    case Stage::kRouting:
      return "routing";
    case Stage::kDispatchPermute:
      return "dispatch_permute";
    case Stage::kGateUp:
      return "gate_up";
    case Stage::kActivation:
      return "activation";
    case Stage::kDown:
      return "down";
    case Stage::kCombine:
      return "combine";
  }
  return "unknown";
}

}  // namespace moerun::cuda
