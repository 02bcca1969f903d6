// Helpers of the expert-parallel tests (CPU and GPU): each rank's experts out of all E, and rows
// of a tensor. The routing cases they cover are core/synthetic.h's add_ep_routing_cases.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/expert_placement.h"
#include "core/synthetic.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun::test {

// Rank r's experts in its local-id order, copied out of all E experts.
struct RankWeights {
  std::vector<HostMoeWeights> owned;
  std::vector<MoeWeights> views;
};

inline RankWeights rank_weights(const MoeWeights& all, const ExpertPlacement& placement) {
  RankWeights w;
  for (int r = 0; r < placement.num_ranks(); ++r) {
    std::vector<int> experts;
    for (int l = 0; l < placement.num_local_experts(); ++l) {
      experts.push_back(placement.global_id(r, l));
    }
    w.owned.push_back(gather_experts(all, experts));
  }
  for (const HostMoeWeights& h : w.owned) w.views.push_back(h.view());
  return w;
}

// The rows [begin, end) of a [T, C] tensor, copied.
inline HostTensor rows_of(const TensorView& t, std::int64_t begin, std::int64_t end) {
  HostTensor out(t.dtype(), {end - begin, t.size(1)});
  const std::size_t row =
      t.nbytes() / static_cast<std::size_t>(std::max<std::int64_t>(1, t.size(0)));
  if (end > begin) {
    std::memcpy(out.view().data(), static_cast<const std::byte*>(t.data()) + begin * row,
                (end - begin) * row);
  }
  return out;
}

}  // namespace moerun::test
