#include "cpu/quant.h"

#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun::cpu {

void quantize_row_fp8(const float* values, std::int64_t cols, fp8e4m3* codes, float* scales) {
  for (std::int64_t g = 0; g < cols / kQuantGroup; ++g) {
    const float* group = values + g * kQuantGroup;
    float amax = 0.0f;
    for (std::int64_t c = 0; c < kQuantGroup; ++c) amax = std::max(amax, std::fabs(group[c]));
    amax = std::max(amax, kAmaxFloor);
    const float inverse_scale = kFp8E4M3Max / amax;
    scales[g] = amax / kFp8E4M3Max;
    for (std::int64_t c = 0; c < kQuantGroup; ++c) {
      codes[g * kQuantGroup + c] = float_to_fp8e4m3(group[c] * inverse_scale);
    }
  }
}

namespace {
void check_block_shape(const TensorView& w, std::string_view name) {
  check_arg(w.ndim() == 3, std::string(name) + " rank", "3 ([E, N, K])", w.ndim());
  check_arg(w.size(1) % kQuantGroup == 0, std::string(name) + " N", "a multiple of 128", w.size(1));
  check_arg(w.size(2) % kQuantGroup == 0, std::string(name) + " K", "a multiple of 128", w.size(2));
}
}  // namespace

BlockQuantized quantize_weights_fp8(const TensorView& weights) {
  check_block_shape(weights, "weights");
  const std::int64_t experts = weights.size(0), n = weights.size(1), k = weights.size(2);
  check_tensor(weights, "weights", DType::kBF16, {experts, n, k}, DeviceType::kCpu);
  const std::int64_t n_blocks = n / kQuantGroup, k_blocks = k / kQuantGroup;
  BlockQuantized out{HostTensor(DType::kFP8E4M3, {experts, n, k}),
                     HostTensor(DType::kF32, {experts, n_blocks, k_blocks})};
  const auto* src = weights.data_as<const bf16>();
  auto* codes = out.weights.data<fp8e4m3>();
  auto* scales = out.scales.data<float>();
  detail::parallel_for(experts * n_blocks, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t block_row = begin; block_row < end; ++block_row) {
      const std::int64_t row0 = block_row * kQuantGroup;  // over E * N rows
      for (std::int64_t kb = 0; kb < k_blocks; ++kb) {
        float amax = 0.0f;
        for (std::int64_t r = 0; r < kQuantGroup; ++r) {
          const bf16* p = src + (row0 + r) * k + kb * kQuantGroup;
          for (std::int64_t c = 0; c < kQuantGroup; ++c) {
            amax = std::max(amax, std::fabs(bf16_to_float(p[c])));
          }
        }
        amax = std::max(amax, kAmaxFloor);
        const float inverse_scale = kFp8E4M3Max / amax;
        scales[block_row * k_blocks + kb] = amax / kFp8E4M3Max;
        for (std::int64_t r = 0; r < kQuantGroup; ++r) {
          const std::int64_t offset = (row0 + r) * k + kb * kQuantGroup;
          for (std::int64_t c = 0; c < kQuantGroup; ++c) {
            codes[offset + c] = float_to_fp8e4m3(bf16_to_float(src[offset + c]) * inverse_scale);
          }
        }
      }
    }
  });
  return out;
}

HostTensor dequantize_weights_fp8(const TensorView& weights, const TensorView& scales) {
  check_block_shape(weights, "weights");
  const std::int64_t experts = weights.size(0), n = weights.size(1), k = weights.size(2);
  check_tensor(weights, "weights", DType::kFP8E4M3, {experts, n, k}, DeviceType::kCpu);
  const std::int64_t k_blocks = k / kQuantGroup;
  check_tensor(scales, "weight scales", DType::kF32, {experts, n / kQuantGroup, k_blocks},
               DeviceType::kCpu);
  HostTensor out(DType::kBF16, {experts, n, k});
  const auto* codes = weights.data_as<const fp8e4m3>();
  const auto* s = scales.data_as<const float>();
  auto* dst = out.data<bf16>();
  detail::parallel_for(experts * n, 128, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = begin; row < end; ++row) {
      const float* row_scales = s + (row / kQuantGroup) * k_blocks;
      for (std::int64_t c = 0; c < k; ++c) {
        const float value = fp8e4m3_to_float(codes[row * k + c]) * row_scales[c / kQuantGroup];
        dst[row * k + c] = float_to_bf16(value);
      }
    }
  });
  return out;
}

}  // namespace moerun::cpu
