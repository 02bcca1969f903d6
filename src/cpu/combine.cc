#include "cpu/combine.h"

#include <string>
#include <vector>

#include "core/parallel.h"
#include "moerun/errors.h"

namespace moerun::cpu {

void combine(const TensorView& down, const TensorView& src2dst, const TensorView& topk_weights,
             const TensorView& out, float output_scale) {
  check_arg(src2dst.ndim() == 2, "src2dst rank", "2 ([T, k])", src2dst.ndim());
  const std::int64_t tokens = src2dst.size(0), k = src2dst.size(1);
  check_tensor(src2dst, "src2dst", DType::kI32, {tokens, k}, DeviceType::kCpu);
  check_tensor(topk_weights, "topk_weights", DType::kF32, {tokens, k}, DeviceType::kCpu);
  check_arg(down.dtype() == DType::kBF16, "down dtype", "bf16", dtype_name(down.dtype()));
  const std::int64_t hidden = down.size(down.ndim() - 1);
  const std::int64_t rows = down.numel() / std::max<std::int64_t>(1, hidden);
  const bool out_f32 = out.dtype() == DType::kF32;
  check_arg(out_f32 || out.dtype() == DType::kBF16, "combine out dtype", "bf16 or f32",
            dtype_name(out.dtype()));
  check_tensor(out, "combine out", out.dtype(), {tokens, hidden}, DeviceType::kCpu);

  const int* dst = src2dst.data_as<const int>();
  for (std::int64_t i = 0; i < tokens * k; ++i) {
    check_arg(dst[i] >= -1 && dst[i] < rows,
              "src2dst[" + std::to_string(i / k) + ", " + std::to_string(i % k) + "]",
              "a row in [-1, " + std::to_string(rows) + ")", dst[i]);
  }
  const auto* rows_in = down.data_as<const bf16>();
  const float* weights = topk_weights.data_as<const float>();
  detail::parallel_for(tokens, 8, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> acc(static_cast<std::size_t>(hidden));
    for (std::int64_t t = begin; t < end; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::int64_t j = 0; j < k; ++j) {
        const int row = dst[t * k + j];
        // -1 is the only skip: a row index of 0 (or local expert 0) is a real contribution.
        if (row < 0) continue;
        const float w = weights[t * k + j];
        const bf16* values = rows_in + static_cast<std::int64_t>(row) * hidden;
        for (std::int64_t c = 0; c < hidden; ++c) acc[c] += w * bf16_to_float(values[c]);
      }
      for (float& v : acc) v *= output_scale;  // exact when the scale is 1
      if (out_f32) {
        std::copy(acc.begin(), acc.end(), out.data_as<float>() + t * hidden);
      } else {
        bf16* o = out.data_as<bf16>() + t * hidden;
        for (std::int64_t c = 0; c < hidden; ++c) o[c] = float_to_bf16(acc[c]);
      }
    }
  });
}

}  // namespace moerun::cpu
