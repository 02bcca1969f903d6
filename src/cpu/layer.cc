#include "cpu/layer.h"

#include <span>
#include <string>
#include <vector>

#include "core/checks.h"
#include "core/expert_placement.h"
#include "cpu/combine.h"
#include "cpu/dispatch.h"
#include "cpu/ep_layer.h"
#include "cpu/experts.h"
#include "cpu/permute.h"
#include "moerun/errors.h"
#include "moerun/expert_map.h"

namespace moerun::cpu {

void moe_forward(const MoeConfig& config, const MoeWeights& local_weights,
                 const HiddenStates& hidden, const TensorView& topk_ids,
                 const TensorView& topk_weights, const TensorView& out,
                 const ForwardOptions& options) {
  config.validate();
  const int local_experts = config.num_local_experts();
  local_weights.validate(config, local_experts, Device{});
  check_arg(hidden.data.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.data.ndim());
  const std::int64_t tokens = hidden.data.size(0);
  const std::int64_t h = config.hidden_size;
  const DType hidden_dtype = hidden.prequantized() ? DType::kFP8E4M3 : DType::kBF16;
  check_tensor(hidden.data, "hidden_states", hidden_dtype, {tokens, h}, DeviceType::kCpu);
  check_tensor(topk_ids, "topk_ids", DType::kI32, {tokens, config.top_k()}, DeviceType::kCpu);
  detail::check_topk_weights(topk_weights, tokens, config.top_k());
  check_arg(!options.overlap || options.layout == Layout::kMasked, "overlap",
            "the masked layout (the down GEMM reports per masked row block)",
            layout_name(options.layout));

  HostTensor local_ids;
  if (options.ids == ExpertIds::kGlobal && options.expert_map.defined()) {
    check_tensor(options.expert_map, "expert_map", DType::kI32, {config.num_experts},
                 DeviceType::kCpu);
    const std::span<const std::int32_t> map(options.expert_map.data_as<const std::int32_t>(),
                                            static_cast<std::size_t>(config.num_experts));
    const int mapped = validate_expert_map(map, config.num_experts);
    check_arg(mapped == local_experts, "expert_map local experts",
              std::to_string(local_experts) + " (the layer's E_l)", mapped);
    local_ids = map_to_local(topk_ids, map);
  } else if (options.ids == ExpertIds::kGlobal) {
    local_ids = map_to_local(topk_ids, config.local_expert_map());
  } else {
    check_arg(!options.expert_map.defined(), "expert_map", "none with local ids", "a map");
    detail::check_topk_ids(topk_ids, local_experts);  // range [-1, E_l), distinct per token
  }
  const Permuted permuted = permute(
      hidden, options.ids == ExpertIds::kGlobal ? local_ids.view() : topk_ids, local_experts,
      config.num_experts, config.weight_dtype, {options.layout, options.m_max, options.alignment});
  const HostTensor down = run_experts(config, local_weights, permuted, options.overlap);
  combine(down.view(), permuted.src2dst.view(), topk_weights, out, config.output_scale);
}

void moe_forward_standard_ep(const MoeConfig& config, const MoeWeights& all_weights,
                             const TensorView& hidden, const TensorView& topk_ids,
                             const TensorView& topk_weights, const TensorView& out,
                             const ForwardOptions& options) {
  config.validate();
  check_arg(config.expert_map.empty(), "expert_map",
            "none (the simulated ranks place experts contiguously)", "a map");
  all_weights.validate(config, config.num_experts, Device{});
  const int local = config.num_local_experts();
  std::vector<MoeWeights> rank_weights;
  for (int rank = 0; rank < config.ep_size; ++rank) {
    rank_weights.push_back(all_weights.slice_experts(rank * local, local));
  }
  ep_forward_standard(config, ExpertPlacement::contiguous(config.num_experts, config.ep_size),
                      rank_weights, hidden, topk_ids, topk_weights, out, options);
}

}  // namespace moerun::cpu
