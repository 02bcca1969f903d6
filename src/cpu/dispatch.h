// CPU oracle: global expert ids -> this rank's local ids (DESIGN.md stage 2).
#pragma once

#include "moerun/host_tensor.h"

namespace moerun::cpu {

// topk_ids [T, k] i32 global ids in [-1, E) -> [T, k] i32 local ids in [0, E / ep_size), or -1
// where another rank owns the expert (or the slot was already -1). Rank r owns
// [r * E_l, (r + 1) * E_l); local expert 0 is a real expert.
HostTensor map_to_local(const TensorView& topk_ids, int num_experts, int ep_size, int ep_rank);

}  // namespace moerun::cpu
