// CUDA stages 4 and 6: grouped GEMMs NT (out = A * B^T per expert), FP8 block-scaled or BF16, in
// the masked and the contiguous layout (DESIGN.md; oracle cpu/gemm.h).
//
// This is the first, simple kernel: 64x128x64 tiles, 8 warps of mma.sync m16n8k16 bf16 with fp32
// accumulation; FP8 codes are widened to bf16 exactly on their way to shared memory (every e4m3
// value is a bf16 value, and bf16 x bf16 products are exact in fp32). FP8: per 128-wide K block an
// fp32 partial sum, promoted into the fp32 accumulator times act_scale x weight_scale, as the
// oracle does. Results differ from the oracle only by fp32 summation order (then bf16 rounding).
#pragma once

#include <cuda_runtime_api.h>

#include <optional>

#include "moerun/tensor.h"

namespace moerun::cuda {

// Row block of the kernel: the masked M_max and the contiguous alignment (128) are multiples of
// it, and the overlap report's block_m.
inline constexpr int kGemmBlockM = 64;
// Columns per output tile: the overlap report's threshold is ceil(N / kGemmBlockN).
inline constexpr int kGemmBlockN = 128;

// A matrix and, for FP8, its scales (device views). BF16 operands leave `scale` undefined.
//   A (activations): data [rows, K], scale [rows, K / 128] f32
//   B (weights):     data [E_l, N, K], scale [E_l, N / 128, K / 128] f32
struct GemmOperand {
  TensorView data;
  TensorView scale;
};

// Single-batch overlap: after each output tile (kGemmBlockM rows x kGemmBlockN columns) of expert
// e, row block b, the masked GEMM adds 1 to counters[e * ceil(M_max / block_m) + b] with release
// ordering at device scope. The caller zeroes the counters (cudaMemsetAsync) before the GEMM.
struct OverlapSignal {
  TensorView counters;        // [E_l * ceil(M_max / block_m)] i32 (device)
  int block_m = kGemmBlockM;  // must be kGemmBlockM
};

// A row block is final once its counter reaches `threshold` (the number of N tiles).
struct OverlapReport {
  int block_m;
  int threshold;
};

// Masked: A data [E_l, M_max, K]; only rows < masked_m[e] are read and written (the rest of A may
// hold anything, of out is never touched). out [E_l, M_max, N] bf16. Returns a report only when
// `signal` is given.
std::optional<OverlapReport> grouped_gemm_masked(const GemmOperand& a, const GemmOperand& b,
                                                 const TensorView& masked_m, const TensorView& out,
                                                 const OverlapSignal* signal, cudaStream_t stream);

// Contiguous: A data [M_sum, K] with M_sum a multiple of 128, m_indices [M_sum] (rows of -1 are
// neither read nor written; each expert's rows are one run padded to 128), out [M_sum, N] bf16.
void grouped_gemm_contiguous(const GemmOperand& a, const GemmOperand& b,
                             const TensorView& m_indices, const TensorView& out,
                             cudaStream_t stream);

}  // namespace moerun::cuda
