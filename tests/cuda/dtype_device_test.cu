// The device's conversion instructions against our host conversions (label gpu): what the CUDA
// kernels compute in registers must equal what the CPU oracle computes.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <vector>

#include "gpu_required.h"
#include "moerun/dtype.h"

namespace moerun {
namespace {

__global__ void convert_kernel(std::uint32_t first, std::uint32_t stride, std::uint32_t count,
                               std::uint16_t* bf16_out, std::uint8_t* fp8_out) {
  const std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float x = __uint_as_float(first + i * stride);
  bf16_out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x));
  fp8_out[i] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}

bool has_gpu(std::string& reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    reason = std::string("no CUDA device: ") + cudaGetErrorString(status);
    return false;
  }
  if (count == 0) {
    reason = "no CUDA device: cudaGetDeviceCount returned 0";
    return false;
  }
  return true;
}

TEST(DtypeDevice, ConversionInstructionsMatchHostConversions) {
  std::string reason;
  if (!has_gpu(reason)) {
    if (test::gpu_required()) GTEST_FAIL() << reason << " (MOERUN_REQUIRE_GPU=1)";
    GTEST_SKIP() << reason;
  }
  constexpr std::uint32_t kCount = 1u << 24;
  constexpr std::uint32_t kStride = 255;  // 2^24 samples spread over all 2^32 patterns
  std::uint16_t* d_bf16 = nullptr;
  std::uint8_t* d_fp8 = nullptr;
  ASSERT_EQ(cudaMalloc(&d_bf16, kCount * sizeof(std::uint16_t)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_fp8, kCount), cudaSuccess);
  convert_kernel<<<kCount / 256, 256>>>(7, kStride, kCount, d_bf16, d_fp8);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<std::uint16_t> bf16_bits(kCount);
  std::vector<std::uint8_t> fp8_bits(kCount);
  ASSERT_EQ(cudaMemcpy(bf16_bits.data(), d_bf16, kCount * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(fp8_bits.data(), d_fp8, kCount, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d_bf16);
  cudaFree(d_fp8);
  for (std::uint32_t i = 0; i < kCount; ++i) {
    const float x = std::bit_cast<float>(7 + i * kStride);
    ASSERT_EQ(bf16_bits[i], float_to_bf16(x).bits) << "x = " << x;
    ASSERT_EQ(fp8_bits[i], float_to_fp8e4m3(x).bits) << "x = " << x;
  }
}

}  // namespace
}  // namespace moerun
