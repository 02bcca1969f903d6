// Combine kernel: one block row per token, parallel over the hidden dimension.
#include <cuda_runtime.h>

#include <algorithm>
#include <cuda/atomic>
#include <string>

#include "cuda/combine.h"
#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kColumns = kThreads * 8;

struct CombineParams {
  const std::uint16_t* down;  // [rows, H] bf16
  const int* src2dst;         // [T, k]
  const float* weights;       // [T, k]
  void* out;                  // [T, H] bf16 or f32
  long long tokens;
  int top_k;
  int hidden;
  float output_scale;
  int* counters;  // overlap wait, or null
  long long m_max;
  int block_m;
  int counter_blocks;
  int threshold;
};

__device__ void wait_for_rows(const CombineParams& p, const int* dst) {
  for (int j = 0; j < p.top_k; ++j) {
    const int row = dst[j];
    if (row < 0) continue;
    const long long e = row / p.m_max;
    const int block = static_cast<int>((row - e * p.m_max) / p.block_m);
    ::cuda::atomic_ref<int, ::cuda::thread_scope_device> counter(
        p.counters[e * p.counter_blocks + block]);
    long long spins = 0;
    while (counter.load(::cuda::memory_order_acquire) < p.threshold) {
      __nanosleep(256);
      if (++spins > (1ll << 24)) __trap();  // ~4 s: the producer will never finish this block
    }
  }
}

template <bool kF32Out>
__global__ void __launch_bounds__(kThreads) combine_kernel(CombineParams p) {
  const int column = (blockIdx.x * kThreads + threadIdx.x) * 8;
  const bool active = column < p.hidden;
  for (long long t = blockIdx.y; t < p.tokens; t += gridDim.y) {
    const int* dst = p.src2dst + t * p.top_k;
    const float* w = p.weights + t * p.top_k;
    if (p.counters != nullptr) {
      if (threadIdx.x == 0) wait_for_rows(p, dst);
      // Thread 0's acquire, then the barrier, order every thread's reads below after the GEMM's.
      __syncthreads();
    }
    if (active) {
      float acc[8] = {};
      for (int j = 0; j < p.top_k; ++j) {
        const int row = dst[j];
        // -1 is the only skip: row 0 (local expert 0) is a real contribution.
        if (row < 0) continue;
        const float weight = w[j];
        float v[8];
        unpack_bf16x8(*reinterpret_cast<const uint4*>(
                          p.down + static_cast<long long>(row) * p.hidden + column),
                      v);
        // The oracle's acc += w * v: a rounded product, then a rounded sum (no FMA).
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(weight, v[i]));
      }
      // After the sum, as the oracle: exact when the scale is 1.
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = __fmul_rn(acc[i], p.output_scale);
      if constexpr (kF32Out) {
        float4* out = reinterpret_cast<float4*>(static_cast<float*>(p.out) + t * p.hidden + column);
        out[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
        out[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
      } else {
        *reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(p.out) + t * p.hidden + column) =
            pack_bf16x8(acc);
      }
    }
    if (p.counters != nullptr) __syncthreads();  // thread 0 waits for the next token's rows
  }
}

}  // namespace

void combine(const TensorView& down, const TensorView& src2dst, const TensorView& topk_weights,
             const TensorView& out, float output_scale, const CombineWait* wait,
             cudaStream_t stream) {
  check_arg(src2dst.ndim() == 2, "src2dst rank", "2 ([T, k])", src2dst.ndim());
  const std::int64_t tokens = src2dst.size(0), k = src2dst.size(1);
  check_tensor(src2dst, "src2dst", DType::kI32, {tokens, k}, DeviceType::kCuda);
  check_tensor(topk_weights, "topk_weights", DType::kF32, {tokens, k}, DeviceType::kCuda);
  check_arg(down.dtype() == DType::kBF16 && down.is_contiguous() &&
                down.device().type == DeviceType::kCuda,
            "down", "contiguous bf16 on cuda", down.shape_string());
  const std::int64_t hidden = down.size(down.ndim() - 1);
  check_arg(hidden % 8 == 0 && hidden > 0, "hidden_size", "a positive multiple of 8", hidden);
  const bool out_f32 = out.dtype() == DType::kF32;
  check_arg(out_f32 || out.dtype() == DType::kBF16, "combine out dtype", "bf16 or f32",
            dtype_name(out.dtype()));
  check_tensor(out, "combine out", out.dtype(), {tokens, hidden}, DeviceType::kCuda);
  CombineParams p{};
  if (wait != nullptr) {
    check_arg(wait->m_max > 0 && wait->block_m > 0 && wait->threshold > 0, "combine wait",
              "m_max, block_m and threshold > 0", wait->m_max);
    const std::int64_t rows = down.numel() / hidden;
    const std::int64_t per_expert = ceil_div<std::int64_t>(wait->m_max, wait->block_m);
    check_tensor(wait->counters, "overlap counters", DType::kI32, {rows / wait->m_max * per_expert},
                 DeviceType::kCuda);
    p.counters = wait->counters.data_as<int>();
    p.m_max = wait->m_max;
    p.block_m = wait->block_m;
    p.counter_blocks = static_cast<int>(per_expert);
    p.threshold = wait->threshold;
  }
  check_arg(reinterpret_cast<std::uintptr_t>(down.data()) % 16 == 0 &&
                reinterpret_cast<std::uintptr_t>(out.data()) % 16 == 0,
            "down/out data", "16-byte aligned device pointers", "a misaligned pointer");
  if (tokens == 0) return;
  p.down = static_cast<const std::uint16_t*>(down.data());
  p.src2dst = src2dst.data_as<const int>();
  p.weights = topk_weights.data_as<const float>();
  p.out = out.data();
  p.tokens = tokens;
  p.top_k = static_cast<int>(k);
  p.hidden = static_cast<int>(hidden);
  p.output_scale = output_scale;
  const dim3 grid(static_cast<unsigned>(ceil_div<std::int64_t>(hidden, kColumns)),
                  static_cast<unsigned>(std::min<std::int64_t>(tokens, 65535)));
  if (out_f32) {
    combine_kernel<true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    combine_kernel<false><<<grid, kThreads, 0, stream>>>(p);
  }
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda
