// What the host passes to the Hopper grouped GEMM kernels besides the tensor maps (shared by the
// host launcher, cuda/gemm.cc, and the device code; plain C++).
#pragma once

#include <cuda.h>

#include <cstdint>

namespace moerun::cuda::sm90 {

struct GroupedGemmParams {
  // Layout: masked when masked_m is set, contiguous otherwise.
  const int* masked_m = nullptr;   // masked: [E_l] valid rows of each expert (rows >= it ignored)
  const int* m_indices = nullptr;  // contiguous: [M_sum] local expert of each row, -1 = padding
  int m_max = 0;                   // masked: rows per expert in A and out
  int m_row_blocks = 0;            // contiguous: M_sum / BLOCK_M
  const float* b_scale = nullptr;  // FP8: [E_l, N / 128, K / 128] (A's scales come by TMA)
  std::uint16_t* out = nullptr;    // [rows, N] bf16 (full tiles are stored by TMA)
  int* counters = nullptr;         // masked overlap: [E_l * counter_blocks] or null
  int counter_blocks = 0;          // ceil(M_max / 64)
  int n = 0;
  int k = 0;
  int experts = 0;
  int n_blocks = 0;  // ceil(N / BLOCK_N)
  int k_blocks = 0;  // ceil(K / BLOCK_K)
  // Contiguous: tiles walk bands of this many row blocks (>= 1), N block by N block inside a band,
  // so that the CTAs running at once share fewer, hotter A and B tiles in L2.
  int raster_rows = 1;
};

// The kernel's tensor maps (built by cuda/gemm.cc):
//  a, b:     K-major operands {K, rows, groups}, box {128 bytes of K, BLOCK_M or BLOCK_N rows (with
//            clusters: BLOCK_N / 2, each CTA's half), 1}, 128-byte swizzle;
//  a_scale:  FP8 activation scales, MN-major {rows per group, K / 128, groups}, box {BLOCK_M, 1, 1};
//  out:      bf16 {N, rows per group, groups}, box {64 columns, 64 rows, 1}, 128-byte swizzle.
struct GroupedGemmMaps {
  CUtensorMap a, b, a_scale, out;
};

}  // namespace moerun::cuda::sm90
