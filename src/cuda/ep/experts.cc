#include "cuda/ep/experts.h"

#include "cuda/activation.h"
#include "moerun/errors.h"

namespace moerun::cuda::ep {

void gate_up_and_activation(const MoeWeights& weights, const ExpertBuffers& b,
                            cudaStream_t stream) {
  const GemmOperand w13{weights.w13, weights.w13_scale};
  if (b.layout == Layout::kMasked) {
    grouped_gemm_masked({b.tokens, b.token_scales}, w13, b.masked_m, b.gate_up, nullptr, stream,
                        b.expected_m);
  } else {
    grouped_gemm_contiguous({b.tokens, b.token_scales}, w13, b.m_indices, b.gate_up, stream);
  }
  silu_and_mul(b.gate_up, {b.layout, b.masked_m, b.m_max, b.max_rows_with_tokens}, b.activation,
               b.activation_scales, stream);
}

std::optional<OverlapReport> down_projection(const MoeWeights& weights, const ExpertBuffers& b,
                                             const OverlapSignal* signal, cudaStream_t stream) {
  const GemmOperand w2{weights.w2, weights.w2_scale};
  if (b.layout == Layout::kMasked) {
    return grouped_gemm_masked({b.activation, b.activation_scales}, w2, b.masked_m, b.down, signal,
                               stream, b.expected_m);
  }
  check_arg(signal == nullptr, "overlap", "the masked layout (the contiguous GEMM has no report)",
            "the contiguous layout");
  grouped_gemm_contiguous({b.activation, b.activation_scales}, w2, b.m_indices, b.down, stream);
  return std::nullopt;
}

}  // namespace moerun::cuda::ep
