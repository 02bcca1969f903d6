// Router GEMM kernel: 32 x 32 output tiles through shared memory, every output summed by one
// thread in the oracle's order.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/router_gemm.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr int kTile = 32;          // tokens and experts per block, columns per shared-memory step
constexpr int kRowsPerThread = 4;  // tokens per thread: 32 x 8 threads cover a 32 x 32 tile
constexpr int kThreads = kTile * kTile / kRowsPerThread;

// Computes logits[t, e] for a 32-token x 32-expert tile: thread (x, y) owns expert x of the tile
// and tokens y, y + 8, y + 16, y + 24. Launch: grid (ceil(T / 32), ceil(E / 32)), 256 threads.
// Columns are staged 32 at a time; the last step holds only H mod 32 of them, and only those are
// summed (adding zeros could turn a -0 sum into +0 where the oracle keeps -0).
__global__ void __launch_bounds__(kThreads)
    router_gemm_kernel(const std::uint16_t* hidden, const float* weight, float* logits,
                       long long tokens, int experts, int hidden_size) {
  __shared__ float xs[kTile][kTile + 1];  // [token][column]; +1 keeps the column reads apart
  __shared__ float ws[kTile][kTile + 1];  // [expert][column]
  const int x = threadIdx.x % kTile, y = threadIdx.x / kTile;
  const long long t0 = static_cast<long long>(blockIdx.x) * kTile;
  const int e0 = static_cast<int>(blockIdx.y) * kTile;
  float acc[kRowsPerThread] = {};
  for (int c0 = 0; c0 < hidden_size; c0 += kTile) {
    const int cols = min(kTile, hidden_size - c0);
    for (int r = y; r < kTile; r += kThreads / kTile) {
      const long long t = t0 + r;
      const int e = e0 + r;
      float xv = 0.0f, wv = 0.0f;
      if (x < cols && t < tokens) {
        xv = __uint_as_float(static_cast<unsigned>(hidden[t * hidden_size + c0 + x]) << 16);
      }
      if (x < cols && e < experts) wv = weight[static_cast<long long>(e) * hidden_size + c0 + x];
      xs[r][x] = xv;
      ws[r][x] = wv;
    }
    __syncthreads();
    for (int c = 0; c < cols; ++c) {
      const float w = ws[x][c];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        acc[i] = __fadd_rn(acc[i], __fmul_rn(xs[y + i * (kThreads / kTile)][c], w));
      }
    }
    __syncthreads();
  }
  const int e = e0 + x;
  if (e >= experts) return;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const long long t = t0 + y + i * (kThreads / kTile);
    if (t < tokens) logits[t * experts + e] = acc[i];
  }
}

}  // namespace

void router_gemm(const TensorView& hidden, const TensorView& gate_weight,
                 const TensorView& router_logits, cudaStream_t stream) {
  check_arg(hidden.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.ndim());
  check_arg(gate_weight.ndim() == 2, "router gate weight rank", "2 ([E, H])", gate_weight.ndim());
  const std::int64_t tokens = hidden.size(0), h = hidden.size(1), experts = gate_weight.size(0);
  check_tensor(hidden, "hidden_states", DType::kBF16, {tokens, h}, DeviceType::kCuda);
  check_tensor(gate_weight, "router gate weight", DType::kF32, {experts, h}, DeviceType::kCuda);
  check_tensor(router_logits, "router_logits", DType::kF32, {tokens, experts}, DeviceType::kCuda);
  check_arg(h > 0 && h <= (std::int64_t{1} << 30), "hidden_size", "1 .. 2^30", h);
  check_arg(experts > 0 && experts <= 65535 * std::int64_t{kTile}, "router experts",
            "1 .. 65535 x 32", experts);
  check_arg(tokens <= (std::int64_t{1} << 31) * kTile - 1, "hidden_states tokens", "< 2^31 x 32",
            tokens);
  if (tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(ceil_div<std::int64_t>(tokens, kTile)),
                  static_cast<unsigned>(ceil_div<std::int64_t>(experts, kTile)));
  router_gemm_kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const std::uint16_t*>(hidden.data()), gate_weight.data_as<const float>(),
      router_logits.data_as<float>(), tokens, static_cast<int>(experts), static_cast<int>(h));
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda
