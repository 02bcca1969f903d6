#include "moerun/config.h"

#include <cmath>
#include <sstream>

#include "moerun/errors.h"
#include "moerun/expert_map.h"

namespace moerun {

std::string_view layout_name(Layout layout) {
  return layout == Layout::kMasked ? "masked" : "contiguous";
}

void MoeConfig::validate() const {
  check_arg(hidden_size > 0, "hidden_size", "> 0", hidden_size);
  check_arg(intermediate_size > 0, "intermediate_size", "> 0", intermediate_size);
  check_arg(num_experts > 0, "num_experts", "> 0", num_experts);
  check_arg(routing.top_k >= 1 && routing.top_k <= num_experts, "top_k",
            "1 <= top_k <= num_experts (" + std::to_string(num_experts) + ")", routing.top_k);
  check_arg(weight_dtype == DType::kBF16 || weight_dtype == DType::kFP8E4M3, "weight_dtype",
            "bf16 or fp8_e4m3", dtype_name(weight_dtype));
  if (is_fp8()) {
    check_arg(hidden_size % kQuantGroup == 0, "hidden_size", "a multiple of 128 for FP8 weights",
              hidden_size);
    check_arg(intermediate_size % kQuantGroup == 0, "intermediate_size",
              "a multiple of 128 for FP8 weights", intermediate_size);
  }
  // The BF16 path still needs 16-byte rows for vector loads.
  check_arg(hidden_size % 8 == 0, "hidden_size", "a multiple of 8", hidden_size);
  check_arg(intermediate_size % 8 == 0, "intermediate_size", "a multiple of 8", intermediate_size);
  check_arg(ep_size >= 1, "ep_size", ">= 1", ep_size);
  if (expert_map.empty()) {
    check_arg(num_experts % ep_size == 0, "ep_size",
              "a divisor of num_experts (" + std::to_string(num_experts) +
                  "), or an expert_map for other placements",
              ep_size);
  } else {
    validate_expert_map(expert_map, num_experts);
  }
  check_arg(ep_rank >= 0 && ep_rank < ep_size, "ep_rank",
            "0 <= ep_rank < ep_size (" + std::to_string(ep_size) + ")", ep_rank);
  check_arg(routing.routed_scaling_factor > 0.0f, "routed_scaling_factor", "> 0",
            routing.routed_scaling_factor);
  check_arg(std::isfinite(output_scale) && output_scale > 0.0f, "output_scale", "finite and > 0",
            output_scale);
  if (routing.mode == RoutingMode::kGroupedTopK) {
    const int groups = routing.num_groups;
    check_arg(groups >= 1 && num_experts % groups == 0, "num_groups",
              "a divisor of num_experts (" + std::to_string(num_experts) + ")", groups);
    check_arg(num_experts / groups >= 2, "num_groups",
              "at most num_experts / 2 groups (group score is the sum of a group's top 2)", groups);
    check_arg(routing.topk_groups >= 1 && routing.topk_groups <= groups, "topk_groups",
              "1 <= topk_groups <= num_groups (" + std::to_string(groups) + ")",
              routing.topk_groups);
    const int selectable = routing.topk_groups * (num_experts / groups);
    check_arg(routing.top_k <= selectable, "top_k",
              "<= experts in the kept groups (" + std::to_string(selectable) + ")", routing.top_k);
  }
}

int MoeConfig::num_local_experts() const {
  if (expert_map.empty()) return num_experts / ep_size;
  int local = 0;
  for (std::int32_t id : expert_map) local += id >= 0 ? 1 : 0;
  return local;
}

int MoeConfig::first_local_expert() const {
  check_arg(expert_map.empty(), "expert_map",
            "none (a first local expert exists for contiguous placement only)", "a map");
  return ep_rank * num_local_experts();
}

std::vector<std::int32_t> MoeConfig::local_expert_map() const {
  return expert_map.empty() ? contiguous_expert_map(num_experts, ep_size, ep_rank) : expert_map;
}

namespace {
MoeConfig deepseek_style(std::int64_t hidden, std::int64_t intermediate, int experts, int groups,
                         int topk_groups) {
  MoeConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_experts = experts;
  c.routing = {RoutingMode::kGroupedTopK, 8, true, groups, topk_groups, 2.5f};
  c.weight_dtype = DType::kFP8E4M3;
  return c;
}
}  // namespace

MoeConfig model_preset(std::string_view name) {
  if (name == "small") return deepseek_style(1024, 512, 32, 8, 4);
  if (name == "deepseek-v3") return deepseek_style(7168, 2048, 256, 8, 4);
  MoeConfig c;
  c.weight_dtype = DType::kBF16;
  if (name == "qwen3-30b-a3b") {
    c.hidden_size = 2048;
    c.intermediate_size = 768;
    c.num_experts = 128;
    c.routing = {RoutingMode::kSoftmaxTopK, 8, true, 1, 1, 1.0f};
    return c;
  }
  if (name == "mixtral-8x7b") {
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_experts = 8;
    // Mixtral's softmax over the top-k logits equals the renormalized softmax top-k.
    c.routing = {RoutingMode::kSoftmaxTopK, 2, true, 1, 1, 1.0f};
    return c;
  }
  std::string names;
  for (const auto& n : model_preset_names()) names += (names.empty() ? "" : "|") + n;
  throw InvalidArgument("model", "one of " + names, std::string(name));
}

std::vector<std::string> model_preset_names() {
  return {"small", "deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b"};
}

std::string describe(const MoeConfig& c) {
  std::ostringstream out;
  out << "H " << c.hidden_size << ", I " << c.intermediate_size << ", E " << c.num_experts << ", k "
      << c.top_k() << ", weights " << dtype_name(c.weight_dtype) << ", routing ";
  if (c.routing.mode == RoutingMode::kGroupedTopK) {
    out << "grouped top-k (" << c.routing.num_groups << " groups, top " << c.routing.topk_groups
        << ", scale " << c.routing.routed_scaling_factor << ")";
  } else {
    out << "softmax top-k" << (c.routing.renormalize ? " renormalized" : "");
  }
  out << ", EP " << c.ep_size << " (rank " << c.ep_rank << ", " << c.num_local_experts()
      << " local experts" << (c.expert_map.empty() ? "" : ", expert_map") << ")";
  if (c.output_scale != 1.0f) out << ", output scale " << c.output_scale;
  return out.str();
}

}  // namespace moerun
