// Standard-backend kernels: 8 columns per thread, grid-stride over the elements.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/ep/reduce.h"

namespace moerun::cuda::ep {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(std::int64_t items) {
  return static_cast<unsigned>(
      std::clamp<std::int64_t>(ceil_div<std::int64_t>(items, kThreads), 1, 65535));
}

__global__ void sum_kernel(RankContext c, std::size_t offset, long long first, long long vectors,
                           int hidden, std::uint16_t* __restrict__ out) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long element = first * hidden + i * 8;
    float acc[8] = {};
    for (int s = 0; s < c.num_ranks; ++s) {
      const float4* p = reinterpret_cast<const float4*>(
          reinterpret_cast<const float*>(c.peers[s] + offset) + element);
      const float4 lo = p[0], hi = p[1];
      const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[j] = __fadd_rn(acc[j], v[j]);
    }
    *reinterpret_cast<uint4*>(out + i * 8) = pack_bf16x8(acc);
  }
}

__global__ void round_kernel(const float* __restrict__ in, long long vectors,
                             std::uint16_t* __restrict__ out) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float4 lo = reinterpret_cast<const float4*>(in)[2 * i];
    const float4 hi = reinterpret_cast<const float4*>(in)[2 * i + 1];
    const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    *reinterpret_cast<uint4*>(out + i * 8) = pack_bf16x8(v);
  }
}

}  // namespace

void sum_partials(const RankContext& ctx, std::size_t partial_offset, std::int64_t first_row,
                  std::int64_t rows, int hidden_size, std::uint16_t* out, cudaStream_t stream) {
  const std::int64_t vectors = rows * hidden_size / 8;
  if (vectors == 0) return;
  sum_kernel<<<blocks_for(vectors), kThreads, 0, stream>>>(ctx, partial_offset, first_row, vectors,
                                                           hidden_size, out);
  MOERUN_CUDA_CHECK_LAUNCH();
}

void round_to_bf16(const float* in, std::int64_t count, std::uint16_t* out, cudaStream_t stream) {
  if (count == 0) return;
  round_kernel<<<blocks_for(count / 8), kThreads, 0, stream>>>(in, count / 8, out);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda::ep
