// CPU oracle: global expert ids -> this rank's local ids (DESIGN.md stage 2).
#pragma once

#include <cstdint>
#include <span>

#include "moerun/host_tensor.h"

namespace moerun::cpu {

// topk_ids [T, k] i32 global ids in [-1, E), a token's ids other than -1 distinct -> [T, k] i32
// local ids through `expert_map` [E] (moerun/expert_map.h; MoeConfig::local_expert_map()): the
// local id, or -1 where another rank owns the expert (or the slot was already -1). Local expert 0
// is a real expert.
HostTensor map_to_local(const TensorView& topk_ids, std::span<const std::int32_t> expert_map);

}  // namespace moerun::cpu
