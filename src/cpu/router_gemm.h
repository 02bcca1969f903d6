// CPU oracle: the router's linear layer, logits = hidden @ gate.weight^T (before DESIGN.md stage
// 1).
#pragma once

#include "moerun/host_tensor.h"

namespace moerun::cpu {

// hidden [T, H] bf16, gate_weight [E, H] f32 -> router_logits [T, E] f32. Products and sums are
// fp32, over h in increasing order (so the result is one fixed value, whatever the threads), from
// the bf16 hidden states widened exactly, as DeepSeek-V3's fp32 router does.
HostTensor router_logits(const TensorView& hidden, const TensorView& gate_weight);

}  // namespace moerun::cpu
