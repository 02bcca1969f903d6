// CUDA stages 4 and 6: grouped GEMMs NT (out = A * B^T per expert), FP8 block-scaled or BF16, in
// the masked and the contiguous layout (DESIGN.md; oracle cpu/gemm.h).
//
// Hopper-native kernels (cuda/gemm/sm90_grouped_gemm.cuh): TMA tile loads into a multi-stage
// mbarrier pipeline, warp-specialized (a TMA producer warpgroup, one or two wgmma math warpgroups),
// persistent grid walking the groups; BF16 wgmma (HGMMA) with fp32 accumulation, FP8 e4m3 wgmma
// (QGMMA) into a per-128-K-block fp32 partial promoted into the fp32 accumulator times
// act_scale x weight_scale, as the oracle does. Results differ from the oracle only by fp32
// summation order (then bf16 rounding); a row's results never depend on its position or on the
// tile shape the heuristic (cuda/gemm_heuristics.cc) picks, so layouts agree bit for bit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>

#include "cuda/gemm_heuristics.h"
#include "cuda/gemm_shape.h"  // kGemmBlockM and the size rules
#include "moerun/tensor.h"

namespace moerun::cuda {

// A matrix and, for FP8, its scales (device views). BF16 operands leave `scale` undefined.
//   A (activations): data [rows, K], scale f32 MN-major (core/scale_layout.h): masked
//                    [E_l, K / 128, M_max], contiguous [K / 128, M_sum]
//   B (weights):     data [E_l, N, K], scale [E_l, N / 128, K / 128] f32
struct GemmOperand {
  TensorView data;
  TensorView scale;
};

// Single-batch overlap: once the outputs of expert e, rows [b * block_m, (b + 1) * block_m), of
// one N tile of the kernel that runs are stored, the masked GEMM has added 1 to counters[e *
// ceil(M_max / block_m) + b] with release ordering at device scope. Row blocks without a token are
// never counted. The caller zeroes the counters (cudaMemsetAsync) before the GEMM.
// `reserved_sms` SMs are left free of the GEMM's persistent grid, so that the kernel which waits
// on the counters (launched on another stream) runs beside it instead of holding SMs that GEMM
// CTAs queue for.
struct OverlapSignal {
  TensorView counters;        // [E_l * ceil(M_max / block_m)] i32 (device)
  int block_m = kGemmBlockM;  // must be kGemmBlockM
  int reserved_sms = 0;       // 0 .. SMs - 1
};

// A row block is final once its counter reaches `threshold`: ceil(N / BLOCK_N) of the variant
// that ran (grouped_gemm_masked_variant).
struct OverlapReport {
  int block_m;
  int threshold;
};

// Masked: A data [E_l, M_max, K]; only rows < masked_m[e] are read and written (the rest of A may
// hold anything, of out is never touched). out [E_l, M_max, N] bf16. Returns a report only when
// `signal` is given. `expected_m` (mean rows per expert, DESIGN.md; 0 = unknown, M_max assumed)
// only steers the tile shape, never the results.
std::optional<OverlapReport> grouped_gemm_masked(const GemmOperand& a, const GemmOperand& b,
                                                 const TensorView& masked_m, const TensorView& out,
                                                 const OverlapSignal* signal, cudaStream_t stream,
                                                 std::int64_t expected_m = 0);

// Contiguous: A data [M_sum, K] with M_sum a multiple of 128, m_indices [M_sum] (rows of -1 are
// neither read nor written; each expert's rows are one run padded to 128), out [M_sum, N] bf16.
void grouped_gemm_contiguous(const GemmOperand& a, const GemmOperand& b,
                             const TensorView& m_indices, const TensorView& out,
                             cudaStream_t stream);

// The kernel variant each launcher runs for a problem of these sizes on the current device, by
// the same rule (benchmarks and logs; the results never depend on it).
GemmChoice grouped_gemm_masked_variant(bool fp8, std::int64_t experts, std::int64_t m_max,
                                       std::int64_t n, std::int64_t k, std::int64_t expected_m = 0);
GemmChoice grouped_gemm_contiguous_variant(bool fp8, std::int64_t m_sum, std::int64_t n,
                                           std::int64_t k);

}  // namespace moerun::cuda
