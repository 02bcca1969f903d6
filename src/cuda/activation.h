// CUDA stage 5: SiLU-and-mul in fp32, stored bf16 or re-quantized to FP8 1x128 (DESIGN.md stage 5;
// oracle cpu/activation.h). Bit-exact with the oracle given the same gate_up.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moerun/config.h"
#include "moerun/tensor.h"

namespace moerun::cuda {

// Which rows of a permuted buffer hold tokens (the device counterpart of cpu/row_segments.h):
// masked, rows [e * m_max, e * m_max + masked_m[e]); contiguous, rows with m_indices >= 0.
struct RowSet {
  Layout layout = Layout::kMasked;
  TensorView masked_m;  // masked: [E_l] i32 (device)
  std::int64_t m_max = 0;
  TensorView m_indices;  // contiguous: [rows] i32 (device)
  // At most this many rows hold tokens (T * k, say); 0 = unknown. Sizes the launch and picks the
  // evaluation path; never affects the result.
  std::int64_t max_rows_with_tokens = 0;
};

// gate_up [rows, 2I] bf16 (columns [0, I) gate, [I, 2I) up; leading dims flatten to rows).
// out [rows, I]: bf16, or fp8_e4m3 with out_scale [rows, I / 128] f32. Only rows in `rows` are
// read and written. y = gate / (1 + exp(-gate)) * up in fp32, each operation IEEE
// round-to-nearest with no contraction, and exp computed exactly as glibc's expf (the oracle's
// std::exp(float)): CUDA's expf is within 2 ulp, not glibc's result, and a 1-ulp difference in one
// element moves a whole FP8 group's scale. With enough work the kernel reads gate / (1 +
// exp(-gate)) from a shared-memory table over the bf16 gates, filled with that same evaluation
// (silu_bf16.h). See activation.cu.
void silu_and_mul(const TensorView& gate_up, const RowSet& rows, const TensorView& out,
                  const TensorView& out_scale, cudaStream_t stream);

}  // namespace moerun::cuda
