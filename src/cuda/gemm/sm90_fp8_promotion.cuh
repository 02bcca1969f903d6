// FP8 promotion of a K block's partial sums into the accumulators (the oracle's order: acc +=
// partial * (act_scale * weight_scale)), with the tile's columns split between two 128-column
// weight-scale blocks where they straddle one.
#pragma once

#include <algorithm>
#include <utility>

#include "cuda/gemm/sm90_traits.cuh"  // gcd

namespace moerun::cuda::sm90 {

// FP8 promotion of one K block: acc += part * scale, where the fragment's 8-column chunks j <
// kFormer take the scales of the tile's first 128-column weight block and the rest those of the
// second, for row lo (d[4j], d[4j+1]) and row hi (d[4j+2], d[4j+3]).
template <int kFormer, int kNumAccum>
__device__ __forceinline__ void promote_fp8_split(float (&acc)[kNumAccum],
                                                  const float (&part)[kNumAccum], float s0_lo,
                                                  float s0_hi, float s1_lo, float s1_hi) {
#pragma unroll
  for (int j = 0; j < kNumAccum / 4; ++j) {
    const float s_lo = j < kFormer ? s0_lo : s1_lo, s_hi = j < kFormer ? s0_hi : s1_hi;
    acc[4 * j + 0] = fmaf(part[4 * j + 0], s_lo, acc[4 * j + 0]);
    acc[4 * j + 1] = fmaf(part[4 * j + 1], s_lo, acc[4 * j + 1]);
    acc[4 * j + 2] = fmaf(part[4 * j + 2], s_hi, acc[4 * j + 2]);
    acc[4 * j + 3] = fmaf(part[4 * j + 3], s_hi, acc[4 * j + 3]);
  }
}

// Picks the split for the tile's first column modulo 128 (`n_offset`, a multiple of
// gcd(BLOCK_N, 128)): one compiled promotion per possible offset, chosen by a warp-uniform branch,
// so that no chunk selects its scale at run time (a select per chunk per K block doubled the
// promotion's instructions).
template <int BLOCK_N, int kNumAccum, int... kOffsetIndex>
__device__ __forceinline__ void promote_fp8_dispatch(float (&acc)[kNumAccum],
                                                     const float (&part)[kNumAccum], int n_offset,
                                                     float s0_lo, float s0_hi, float s1_lo,
                                                     float s1_hi,
                                                     std::integer_sequence<int, kOffsetIndex...>) {
  constexpr int kStep = gcd(BLOCK_N, 128);
  // Chunks before the boundary: (128 - offset) / 8, all of the tile's when it ends before it.
  (void)((n_offset == kOffsetIndex * kStep
              ? (promote_fp8_split<std::min((128 - kOffsetIndex * kStep) / 8, BLOCK_N / 8)>(
                     acc, part, s0_lo, s0_hi, s1_lo, s1_hi),
                 true)
              : false) ||
         ...);
}

template <int BLOCK_N, int kNumAccum>
__device__ __forceinline__ void promote_fp8(float (&acc)[kNumAccum], const float (&part)[kNumAccum],
                                            int n_offset, float s0_lo, float s0_hi, float s1_lo,
                                            float s1_hi) {
  if constexpr (128 % BLOCK_N == 0) {  // a tile never straddles a 128-column block
    promote_fp8_split<BLOCK_N / 8>(acc, part, s0_lo, s0_hi, s1_lo, s1_hi);
  } else {
    promote_fp8_dispatch<BLOCK_N>(acc, part, n_offset, s0_lo, s0_hi, s1_lo, s1_hi,
                                  std::make_integer_sequence<int, 128 / gcd(BLOCK_N, 128)>{});
  }
}

}  // namespace moerun::cuda::sm90
