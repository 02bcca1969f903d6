#include "cpu/ep_layer.h"

#include <string>

#include "cpu/ep_combine.h"
#include "cpu/ep_reduce.h"
#include "cpu/experts.h"
#include "moerun/errors.h"

namespace moerun::cpu {

namespace {

void check_ranks(const MoeConfig& config, const ExpertPlacement& placement,
                 const std::vector<MoeWeights>& rank_weights) {
  config.validate();
  check_arg(config.expert_map.empty(), "expert_map",
            "none (the EP oracle takes the group's placement)", "a map");
  check_arg(placement.num_experts() == config.num_experts, "expert placement experts",
            std::to_string(config.num_experts) + " (num_experts)", placement.num_experts());
  check_arg(placement.num_ranks() == config.ep_size, "expert placement ranks",
            std::to_string(config.ep_size) + " (ep_size)", placement.num_ranks());
  check_arg(static_cast<int>(rank_weights.size()) == config.ep_size, "EP rank weights",
            std::to_string(config.ep_size) + " (one per rank)", rank_weights.size());
  for (const MoeWeights& w : rank_weights) {
    w.validate(config, config.num_local_experts(), Device{});
  }
}

}  // namespace

void ep_forward_standard(const MoeConfig& config, const ExpertPlacement& placement,
                         const std::vector<MoeWeights>& rank_weights, const TensorView& hidden,
                         const TensorView& topk_ids, const TensorView& topk_weights,
                         const TensorView& out, const ForwardOptions& options) {
  check_ranks(config, placement, rank_weights);
  const std::int64_t tokens = hidden.size(0), h = config.hidden_size;
  check_tensor(out, "out", DType::kBF16, {tokens, h}, DeviceType::kCpu);
  PartialSum sum(tokens, h);
  HostTensor partial(DType::kF32, {tokens, h});
  for (int rank = 0; rank < config.ep_size; ++rank) {
    MoeConfig rank_config = config;
    rank_config.ep_rank = rank;
    rank_config.expert_map = placement.expert_map(rank);
    moe_forward(rank_config, rank_weights[static_cast<std::size_t>(rank)], hidden, topk_ids,
                topk_weights, partial.view(), options);
    sum.add(partial.view());
  }
  sum.store_bf16(out);
}

void ep_forward_all_to_all(const MoeConfig& config, const ExpertPlacement& placement,
                           const std::vector<MoeWeights>& rank_weights,
                           const std::vector<EpRankTokens>& ranks,
                           const std::vector<TensorView>& outs, const EpDispatchOptions& options,
                           bool overlap) {
  check_ranks(config, placement, rank_weights);
  const EpDispatched dispatched =
      ep_dispatch(placement, ranks, config.top_k(), config.weight_dtype, options);
  std::vector<HostTensor> down;
  std::vector<TensorView> down_views;
  for (int r = 0; r < config.ep_size; ++r) {
    down.push_back(run_experts(config, rank_weights[static_cast<std::size_t>(r)],
                               dispatched.received[static_cast<std::size_t>(r)].layout, overlap));
    down_views.push_back(down.back().view());
  }
  ep_combine(dispatched, down_views, ranks, outs, config.output_scale);
}

}  // namespace moerun::cpu
