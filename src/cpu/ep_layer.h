// CPU oracle: the expert-parallel layer over R ranks simulated on one machine, both backends
// (DESIGN.md stage 2). rank_weights[r] holds rank r's E_l experts in its local-id order
// (placement.global_id(r, l) is expert l's global id).
#pragma once

#include <vector>

#include "core/expert_placement.h"
#include "cpu/ep_dispatch.h"
#include "cpu/layer.h"
#include "moerun/config.h"
#include "moerun/weights.h"

namespace moerun::cpu {

// Standard: every rank computes its experts' part of all T tokens (hidden [T, H], topk_ids
// [T, k] global, topk_weights [T, k]) as an f32 partial; the partials are summed in rank order
// and rounded to bf16 once into out [T, H].
void ep_forward_standard(const MoeConfig& config, const ExpertPlacement& placement,
                         const std::vector<MoeWeights>& rank_weights, const TensorView& hidden,
                         const TensorView& topk_ids, const TensorView& topk_weights,
                         const TensorView& out, const ForwardOptions& options = {});

// All-to-all: rank s's tokens (ranks[s]) go to the ranks owning their experts, are computed there
// in options.layout, come back and are combined at the source into outs[s] [T_s, H] bf16. Each
// output equals the single-rank layer's for the same tokens bit for bit (the same rows, the same
// fp32 sums in slot order). `overlap` (masked only) has the down GEMM report progress, as
// single-batch overlap does.
void ep_forward_all_to_all(const MoeConfig& config, const ExpertPlacement& placement,
                           const std::vector<MoeWeights>& rank_weights,
                           const std::vector<EpRankTokens>& ranks,
                           const std::vector<TensorView>& outs, const EpDispatchOptions& options,
                           bool overlap = false);

}  // namespace moerun::cpu
