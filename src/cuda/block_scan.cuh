// Block-wide exclusive scan of one int per thread (kThreads a multiple of 32, at most 1024).
#pragma once

namespace moerun::cuda {

// `warp_sums`: shared scratch of kThreads / 32 ints; `total` gets the block's sum. Ends with a
// barrier, so it can run in a loop.
template <int kThreads>
__device__ __forceinline__ int block_exclusive_scan(int value, int* warp_sums, int& total) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 32 of them");
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int s = lane < kWarps ? warp_sums[lane] : 0;
#pragma unroll
    for (int offset = 1; offset < kWarps; offset *= 2) {
      const int other = __shfl_up_sync(0xffffffffu, s, offset);
      if (lane >= offset) s += other;
    }
    if (lane < kWarps) warp_sums[lane] = s;
  }
  __syncthreads();
  const int prefix = warp > 0 ? warp_sums[warp - 1] : 0;
  total = warp_sums[kWarps - 1];
  __syncthreads();
  return prefix + inclusive - value;
}

}  // namespace moerun::cuda
