// CUDA stage 1: router logits -> top-k expert ids and weights (DESIGN.md stage 1; oracle
// cpu/routing.h).
#pragma once

#include <cuda_runtime_api.h>

#include "moerun/config.h"
#include "moerun/tensor.h"

namespace moerun::cuda {

// Experts per router row and choices per token this kernel handles (a row lives in registers, up
// to 32 values per lane; choice j is kept by lane j).
inline constexpr int kRoutingMaxExperts = 1024;
inline constexpr int kRoutingMaxTopK = 32;

// router_logits [T, E] f32 (device, finite); correction_bias [E] f32 (device; grouped mode only;
// undefined = zeros) -> topk_ids [T, k] i32 global ids, best first, and topk_weights [T, k] f32.
//
// Choices match the oracle exactly: softmax top-k chooses on the logits; grouped top-k on
// sigmoid_f32 scores plus bias (core/portable_math.h, the oracle's function, the same bits here),
// so the compared values are the same floats and ties break the same way (lower expert id, lower
// group id). Weights are computed in double in the oracle's order and rounded once. Grouped
// weights are then the oracle's bit for bit; softmax weights can differ only where the device's
// double exp (<= 1 ulp) and libm's round a double across a float rounding boundary (tests allow
// 1 float ulp).
void route(const RoutingConfig& config, int num_experts, const TensorView& router_logits,
           const TensorView& correction_bias, const TensorView& topk_ids,
           const TensorView& topk_weights, cudaStream_t stream);

}  // namespace moerun::cuda
