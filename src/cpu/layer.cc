#include "cpu/layer.h"

#include <vector>

#include "core/checks.h"
#include "core/expert_placement.h"
#include "cpu/combine.h"
#include "cpu/dispatch.h"
#include "cpu/ep_layer.h"
#include "cpu/experts.h"
#include "cpu/permute.h"
#include "moerun/errors.h"

namespace moerun::cpu {

void moe_forward(const MoeConfig& config, const MoeWeights& local_weights, const TensorView& hidden,
                 const TensorView& topk_ids, const TensorView& topk_weights, const TensorView& out,
                 const ForwardOptions& options) {
  config.validate();
  const int local_experts = config.num_local_experts();
  local_weights.validate(config, local_experts, DeviceType::kCpu);
  check_arg(hidden.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.ndim());
  const std::int64_t tokens = hidden.size(0);
  check_tensor(hidden, "hidden_states", DType::kBF16, {tokens, config.hidden_size},
               DeviceType::kCpu);
  check_tensor(topk_ids, "topk_ids", DType::kI32, {tokens, config.top_k()}, DeviceType::kCpu);
  detail::check_topk_weights(topk_weights, tokens, config.top_k());
  check_arg(!options.overlap || options.layout == Layout::kMasked, "overlap",
            "the masked layout (the down GEMM reports per masked row block)",
            layout_name(options.layout));

  const HostTensor local_ids =
      map_to_local(topk_ids, config.num_experts, config.ep_size, config.ep_rank);
  const Permuted permuted =
      permute(hidden, local_ids.view(), local_experts, config.num_experts, config.weight_dtype,
              {options.layout, options.m_max, options.alignment});
  const HostTensor down = run_experts(config, local_weights, permuted, options.overlap);
  combine(down.view(), permuted.src2dst.view(), topk_weights, out);
}

void moe_forward_standard_ep(const MoeConfig& config, const MoeWeights& all_weights,
                             const TensorView& hidden, const TensorView& topk_ids,
                             const TensorView& topk_weights, const TensorView& out,
                             const ForwardOptions& options) {
  config.validate();
  all_weights.validate(config, config.num_experts, DeviceType::kCpu);
  const int local = config.num_local_experts();
  std::vector<MoeWeights> rank_weights;
  for (int rank = 0; rank < config.ep_size; ++rank) {
    rank_weights.push_back(all_weights.slice_experts(rank * local, local));
  }
  ep_forward_standard(config, ExpertPlacement::contiguous(config.num_experts, config.ep_size),
                      rank_weights, hidden, topk_ids, topk_weights, out, options);
}

}  // namespace moerun::cpu
