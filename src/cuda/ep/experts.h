// The expert computation on a rank's received layout (DESIGN.md stages 4-6; oracle
// cpu/experts.h): gate-up GEMM, SiLU-and-mul (re-quantized for FP8), down GEMM, through the
// launchers of cuda/gemm.h and cuda/activation.h. Split in two so that the overlap stream can be
// forked between them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>

#include "cuda/gemm.h"
#include "moerun/config.h"
#include "moerun/tensor.h"
#include "moerun/weights.h"

namespace moerun::cuda::ep {

// Device views of one rank's layout: masked [E_l, M_max, cols] or contiguous [capacity, cols].
struct ExpertBuffers {
  Layout layout = Layout::kMasked;
  TensorView tokens, token_scales;           // the received rows (the window); scales FP8 only
  TensorView masked_m;                       // [E_l]
  TensorView m_indices;                      // contiguous: [capacity]
  TensorView gate_up;                        // bf16 [.., 2I]
  TensorView activation, activation_scales;  // [.., I]; scales FP8 only
  TensorView down;                           // bf16 [.., H]
  std::int64_t m_max = 0;                    // masked
  std::int64_t max_rows_with_tokens = 0;     // a launch-size hint for the activation
  std::int64_t expected_m = 0;               // masked GEMM tile hint
};

void gate_up_and_activation(const MoeWeights& weights, const ExpertBuffers& b, cudaStream_t stream);
// With `signal` (masked only) the down GEMM reports progress; the report is returned exactly then.
std::optional<OverlapReport> down_projection(const MoeWeights& weights, const ExpertBuffers& b,
                                             const OverlapSignal* signal, cudaStream_t stream);

}  // namespace moerun::cuda::ep
