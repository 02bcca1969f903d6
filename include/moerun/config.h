// Configuration of one MoE layer: shapes, routing, weight dtype and expert parallelism.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moerun/dtype.h"

namespace moerun {

// Quantization group along K (activations: 1x128 per token; weights: 128x128 blocks).
inline constexpr std::int64_t kQuantGroup = 128;

enum class RoutingMode : std::uint8_t {
  // softmax over all experts, then top-k (optionally renormalized over the k chosen).
  kSoftmaxTopK,
  // DeepSeek-V3: sigmoid scores, correction bias for choosing only, group score = sum of the
  // group's top-2 biased scores, keep topk_groups groups, top-k inside them.
  kGroupedTopK,
};

struct RoutingConfig {
  RoutingMode mode = RoutingMode::kSoftmaxTopK;
  int top_k = 1;
  bool renormalize = true;
  int num_groups = 1;   // grouped mode only
  int topk_groups = 1;  // grouped mode only
  float routed_scaling_factor = 1.0f;
};

enum class Layout : std::uint8_t { kMasked, kContiguous };
std::string_view layout_name(Layout layout);

struct MoeConfig {
  std::int64_t hidden_size = 0;        // H
  std::int64_t intermediate_size = 0;  // I, per expert
  int num_experts = 0;                 // E, global
  RoutingConfig routing;               // routing.top_k is k
  DType weight_dtype = DType::kBF16;   // kBF16 or kFP8E4M3; activations follow it
  int ep_size = 1;
  int ep_rank = 0;
  // This rank's expert placement (moerun/expert_map.h): [E] entries, global id -> local id or -1,
  // any placement (E need not be a multiple of ep_size). Empty: contiguous, rank ep_rank owning
  // [ep_rank * E_l, (ep_rank + 1) * E_l).
  std::vector<std::int32_t> expert_map;
  // Multiplies the combined output in fp32 before its one rounding: SGLang's routed_scaling_factor
  // where its top-k leaves the factor out. Independent of routing.routed_scaling_factor, which
  // scales the weights moerun's own grouped top-k produces.
  float output_scale = 1.0f;

  int top_k() const { return routing.top_k; }
  // E_l: the map's local experts, or E / ep_size.
  int num_local_experts() const;
  // Contiguous placement only (rejected with an expert_map): the global id of local expert 0.
  int first_local_expert() const;
  // The placement as a map either way.
  std::vector<std::int32_t> local_expert_map() const;
  bool is_fp8() const { return weight_dtype == DType::kFP8E4M3; }

  // Rejects inconsistent settings, naming the field and the expected value.
  void validate() const;
};

// The model shapes every benchmark uses (DESIGN.md), by name: "deepseek-v3", "qwen3-30b-a3b",
// "mixtral-8x7b", plus "small" (a DeepSeek-style FP8 layer that runs in seconds on a CPU).
MoeConfig model_preset(std::string_view name);
std::vector<std::string> model_preset_names();

std::string describe(const MoeConfig& config);

}  // namespace moerun
