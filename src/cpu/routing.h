// CPU oracle: router logits -> top-k expert ids and weights (DESIGN.md stage 1).
#pragma once

#include "moerun/config.h"
#include "moerun/host_tensor.h"

namespace moerun::cpu {

struct TopK {
  HostTensor ids;      // [T, k] i32, global expert ids, best first
  HostTensor weights;  // [T, k] f32
};

// router_logits [T, E] f32, finite. correction_bias [E] f32, grouped mode only (undefined: zeros).
// Ties are broken by the lower expert id (and the lower group id for groups).
TopK route(const RoutingConfig& config, int num_experts, const TensorView& router_logits,
           const TensorView& correction_bias = {});

}  // namespace moerun::cpu
