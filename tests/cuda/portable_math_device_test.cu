// The GPU evaluates core/portable_math.h to the same bits as the host (label gpu): the CUDA
// activation and routing kernels are bit-exact with the oracle only if this holds.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "core/portable_math.h"
#include "gpu_required.h"

namespace moerun::detail {
namespace {

__global__ void evaluate_kernel(std::uint32_t first, std::uint32_t stride, std::uint32_t count,
                                float* exp_out, float* silu_out, float* sigmoid_out) {
  const std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float x = __uint_as_float(first + i * stride);
  exp_out[i] = portable_expf(x);
  silu_out[i] = silu_f32(x);
  sigmoid_out[i] = sigmoid_f32(x);
}

// Bits that compare equal for any two NaNs (the payload is not part of the contract).
std::uint32_t canonical_bits(float f) {
  return f != f ? 0x7fc00000u : std::bit_cast<std::uint32_t>(f);
}

void check_sweep(std::uint32_t first, std::uint32_t stride, std::uint32_t count) {
  float *d_exp = nullptr, *d_silu = nullptr, *d_sigmoid = nullptr;
  ASSERT_EQ(cudaMalloc(&d_exp, count * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_silu, count * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_sigmoid, count * sizeof(float)), cudaSuccess);
  evaluate_kernel<<<(count + 255) / 256, 256>>>(first, stride, count, d_exp, d_silu, d_sigmoid);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> exp_bits(count), silu_bits(count), sigmoid_bits(count);
  ASSERT_EQ(cudaMemcpy(exp_bits.data(), d_exp, count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(silu_bits.data(), d_silu, count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(sigmoid_bits.data(), d_sigmoid, count * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(d_exp);
  cudaFree(d_silu);
  cudaFree(d_sigmoid);
  for (std::uint32_t i = 0; i < count; ++i) {
    const float x = std::bit_cast<float>(first + i * stride);
    ASSERT_EQ(canonical_bits(exp_bits[i]), canonical_bits(portable_expf(x))) << "exp " << x;
    ASSERT_EQ(canonical_bits(silu_bits[i]), canonical_bits(silu_f32(x))) << "silu " << x;
    ASSERT_EQ(canonical_bits(sigmoid_bits[i]), canonical_bits(sigmoid_f32(x))) << "sigmoid " << x;
  }
}

bool has_gpu(std::string& reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    reason = std::string("no CUDA device: ") +
             (status != cudaSuccess ? cudaGetErrorString(status) : "cudaGetDeviceCount returned 0");
    return false;
  }
  return true;
}

TEST(PortableMathDevice, EveryBf16InputMatchesTheHost) {
  std::string reason;
  if (!has_gpu(reason)) {
    if (test::gpu_required()) GTEST_FAIL() << reason << " (MOERUN_REQUIRE_GPU=1)";
    GTEST_SKIP() << reason;
  }
  // The activation's gates are bf16: the top 16 bits of a float, all 65536 of them.
  check_sweep(0, 1u << 16, 1u << 16);
}

TEST(PortableMathDevice, SpreadFloatInputsMatchTheHost) {
  std::string reason;
  if (!has_gpu(reason)) {
    if (test::gpu_required()) GTEST_FAIL() << reason << " (MOERUN_REQUIRE_GPU=1)";
    GTEST_SKIP() << reason;
  }
  // Router logits are any float: 2^24 patterns spread over all 2^32.
  check_sweep(11, 255, 1u << 24);
}

}  // namespace
}  // namespace moerun::detail
