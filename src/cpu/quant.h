// CPU oracle: FP8 e4m3 quantization, 1x128 per token group (activations) and 128x128 blocks
// (weights). Both use scale = max(amax, kAmaxFloor) / 448 and q = fp8(x * (448 / amax_floored)),
// the exact fp32 operations the CUDA kernels perform.
#pragma once

#include <cstdint>

#include "moerun/dtype.h"
#include "moerun/host_tensor.h"

namespace moerun::cpu {

// Floors a group's amax so that an all-zero group gets a finite, non-zero scale.
inline constexpr float kAmaxFloor = 1e-10f;

// Quantizes `cols` values (a multiple of 128) into e4m3 codes and cols / 128 scales.
void quantize_row_fp8(const float* values, std::int64_t cols, fp8e4m3* codes, float* scales);

struct BlockQuantized {
  HostTensor weights;  // [E, N, K] fp8_e4m3
  HostTensor scales;   // [E, N / 128, K / 128] f32
};

// BF16 weights [E, N, K] (N and K multiples of 128) -> FP8 with one scale per 128x128 block.
BlockQuantized quantize_weights_fp8(const TensorView& weights);

// The inverse: FP8 [E, N, K] with block scales -> BF16 values (code * scale, rounded to bf16).
HostTensor dequantize_weights_fp8(const TensorView& weights, const TensorView& scales);

}  // namespace moerun::cpu
