// CPU oracle: grouped GEMMs, NT (out = A * B^T per expert), FP8 block-scaled or BF16
// (DESIGN.md stages 4 and 6), in the masked and the contiguous layout.
#pragma once

#include <cstdint>
#include <optional>

#include "moerun/tensor.h"

namespace moerun::cpu {

// A matrix and, for FP8, its scales. BF16 operands leave `scale` undefined.
//   A (activations): data [rows, K], scale f32 (one per row per 128 columns), MN-major
//                    (core/scale_layout.h): masked [E_l, K / 128, M_max], contiguous [K / 128,
//                    M_sum]
//   B (weights):     data [E_l, N, K], scale [E_l, N / 128, K / 128] f32 (one per 128x128 block)
struct GemmOperand {
  TensorView data;
  TensorView scale;
};

// Requests progress reports from the masked down GEMM for single-batch overlap: after each output
// tile (block_m rows x 128 columns) of expert e, row block b, it increments
// counters[e * ceil(M_max / block_m) + b] with release ordering. The caller zeroes the counters.
struct OverlapSignal {
  TensorView counters;  // [E_l * ceil(M_max / block_m)] i32
  int block_m = 128;
};

// What a GEMM that reported returns: a row block is final once its counter reaches `threshold`.
struct OverlapReport {
  int block_m;
  int threshold;  // number of N tiles
};

// Masked: A data [E_l, M_max, K]; only rows < masked_m[e] are read and written.
// out [E_l, M_max, N] bf16. Returns a report only when `signal` is given.
std::optional<OverlapReport> grouped_gemm_masked(const GemmOperand& a, const GemmOperand& b,
                                                 const TensorView& masked_m, const TensorView& out,
                                                 const OverlapSignal* signal = nullptr);

// Contiguous: A data [M_sum, K], m_indices [M_sum] (-1 rows are neither read nor written),
// out [M_sum, N] bf16.
void grouped_gemm_contiguous(const GemmOperand& a, const GemmOperand& b,
                             const TensorView& m_indices, const TensorView& out);

}  // namespace moerun::cpu
