// CUDA: the router's linear layer, logits = hidden @ gate.weight^T (before DESIGN.md stage 1;
// oracle cpu/router_gemm.h).
#pragma once

#include <cuda_runtime_api.h>

#include "moerun/tensor.h"

namespace moerun::cuda {

// hidden [T, H] bf16, gate_weight [E, H] f32 -> router_logits [T, E] f32, all on the device.
// Bit for bit the oracle's: each logit is one thread's fp32 sum over h in increasing order of
// rounded products (no FMA), from the bf16 hidden states widened exactly. Routing is a
// discontinuous function of the logits (a 1-ulp difference can swap two experts), so the device
// reproduces the oracle's values rather than approximating them.
void router_gemm(const TensorView& hidden, const TensorView& gate_weight,
                 const TensorView& router_logits, cudaStream_t stream);

}  // namespace moerun::cuda
