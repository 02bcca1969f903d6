#include "core/checks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>

#include "core/parallel.h"
#include "moerun/errors.h"

namespace moerun::detail {

namespace {
std::string element(std::string_view name, std::int64_t row, std::int64_t col) {
  return std::string(name) + "[" + std::to_string(row) + ", " + std::to_string(col) + "]";
}

// "nan", "inf", "-inf", or the value (std::to_string would print "-nan" and six decimals).
std::string float_text(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream out;
  out << v;
  return out.str();
}

// Bit tests, exact for every encoding (no float compare can miss a signalling NaN).
bool bad_bf16(std::uint16_t bits) { return (bits & 0x7f80u) == 0x7f80u; }
bool bad_f32(std::uint32_t bits) { return (bits & 0x7f800000u) == 0x7f800000u; }
bool bad_fp8(std::uint8_t bits) { return (bits & 0x7fu) == 0x7fu; }
// Not finite, negative (-0 included) or zero.
bool bad_scale(std::uint32_t bits) {
  return bad_f32(bits) || (bits & 0x80000000u) != 0 || (bits & 0x7fffffffu) == 0;
}

// The first index in [0, n) where bad(i), over the machine's cores.
template <class Bad>
std::optional<std::int64_t> first_where(std::int64_t n, bool parallel, Bad&& bad) {
  std::int64_t first = std::numeric_limits<std::int64_t>::max();
  std::mutex mutex;
  // One chunk covering everything runs on the calling thread.
  parallel_for(n, parallel ? 1 << 16 : std::max<std::int64_t>(n, 1),
               [&](std::int64_t begin, std::int64_t end) {
                 for (std::int64_t i = begin; i < end; ++i) {
                   if (bad(i)) {
                     std::lock_guard<std::mutex> lock(mutex);
                     first = std::min(first, i);
                     return;
                   }
                 }
               });
  if (first == std::numeric_limits<std::int64_t>::max()) return std::nullopt;
  return first;
}

template <class T>
const T* host_data(const TensorView& view) {
  check_arg(view.device().type == DeviceType::kCpu, "checked tensor device", "cpu",
            device_name(view.device()));
  return view.data_as<const T>();
}
}  // namespace

void check_all_finite(const float* values, std::int64_t rows, std::int64_t cols,
                      std::string_view name) {
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(values[i])) {
      throw InvalidArgument(element(name, i / cols, i % cols), kFiniteValue, float_text(values[i]));
    }
  }
}

void check_topk_ids(const TensorView& topk_ids, int num_experts) {
  check_arg(topk_ids.ndim() == 2, "topk_ids rank", "2 ([T, k])", topk_ids.ndim());
  check_tensor(topk_ids, "topk_ids", DType::kI32, {topk_ids.size(0), topk_ids.size(1)},
               DeviceType::kCpu);
  const std::int64_t tokens = topk_ids.size(0);
  const std::int64_t k = topk_ids.size(1);
  const int* ids = topk_ids.data_as<const int>();
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t j = 0; j < k; ++j) {
      const int id = ids[t * k + j];
      check_arg(id >= -1 && id < num_experts, element("topk_ids", t, j),
                "an expert id in [-1, " + std::to_string(num_experts) + ")", id);
      for (std::int64_t i = 0; i < j && id >= 0; ++i) {
        check_arg(ids[t * k + i] != id, element("topk_ids", t, j),
                  "an expert not already chosen by token " + std::to_string(t) + " (slot " +
                      std::to_string(i) + ")",
                  id);
      }
    }
  }
}

void check_topk_weights(const TensorView& topk_weights, std::int64_t tokens, int top_k) {
  check_tensor(topk_weights, "topk_weights", DType::kF32, {tokens, top_k}, DeviceType::kCpu);
  check_all_finite(topk_weights.data_as<const float>(), tokens, top_k, "topk_weights");
}

std::optional<std::int64_t> first_non_finite(const TensorView& view, bool parallel) {
  const std::int64_t n = view.numel();
  switch (view.dtype()) {
    case DType::kBF16: {
      const auto* p = host_data<std::uint16_t>(view);
      return first_where(n, parallel, [p](std::int64_t i) { return bad_bf16(p[i]); });
    }
    case DType::kF32: {
      const auto* p = host_data<std::uint32_t>(view);
      return first_where(n, parallel, [p](std::int64_t i) { return bad_f32(p[i]); });
    }
    case DType::kFP8E4M3: {
      const auto* p = host_data<std::uint8_t>(view);
      return first_where(n, parallel, [p](std::int64_t i) { return bad_fp8(p[i]); });
    }
    default:
      throw InvalidArgument("checked tensor dtype", "bf16, f32 or fp8_e4m3",
                            dtype_name(view.dtype()));
  }
}

std::optional<std::int64_t> first_bad_scale(const TensorView& view, bool parallel) {
  check_arg(view.dtype() == DType::kF32, "scale dtype", "f32", dtype_name(view.dtype()));
  const auto* p = host_data<std::uint32_t>(view);
  return first_where(view.numel(), parallel, [p](std::int64_t i) { return bad_scale(p[i]); });
}

std::string index_text(const Shape& shape, std::int64_t flat) {
  std::string dims[kMaxTensorDims];
  for (int d = shape.ndim() - 1; d >= 0; --d) {
    const std::int64_t extent = std::max<std::int64_t>(1, shape[d]);
    dims[d] = std::to_string(d == 0 ? flat : flat % extent);
    flat /= extent;
  }
  std::string text = "[";
  for (int d = 0; d < shape.ndim(); ++d) text += (d ? ", " : "") + dims[d];
  return text + "]";
}

std::string value_text(const TensorView& view, std::int64_t flat) {
  const auto* bytes = static_cast<const std::uint8_t*>(view.data());
  switch (view.dtype()) {
    case DType::kBF16: {
      bf16 v;
      std::memcpy(&v, bytes + flat * 2, 2);
      return float_text(bf16_to_float(v));
    }
    case DType::kF32: {
      float v;
      std::memcpy(&v, bytes + flat * 4, 4);
      return float_text(v);
    }
    case DType::kFP8E4M3: {
      const std::uint8_t code = bytes[flat];
      return float_text(fp8e4m3_to_float(fp8e4m3{code}));
    }
    default:
      return "?";
  }
}

void check_finite(const TensorView& view, std::string_view name) {
  if (const auto bad = first_non_finite(view)) {
    throw InvalidArgument(std::string(name) + index_text(view.shape(), *bad), kFiniteValue,
                          value_text(view, *bad));
  }
}

void check_scales(const TensorView& view, std::string_view name) {
  if (const auto bad = first_bad_scale(view)) {
    throw InvalidArgument(std::string(name) + index_text(view.shape(), *bad), kPositiveScale,
                          value_text(view, *bad));
  }
}

void check_weight_values(const MoeWeights& weights) {
  check_finite(weights.w13, "w13");
  check_finite(weights.w2, "w2");
  if (weights.w13_scale.defined()) check_scales(weights.w13_scale, "w13_scale");
  if (weights.w2_scale.defined()) check_scales(weights.w2_scale, "w2_scale");
  if (weights.correction_bias.defined()) check_finite(weights.correction_bias, "correction_bias");
}

void check_act_scale(const TensorView& scale, std::string_view name, std::int64_t rows,
                     std::int64_t k_blocks, std::int64_t group_rows, DeviceType device) {
  // A layout without rows (contiguous M_sum = 0) is one empty group: [k_blocks, 0].
  const std::int64_t groups = group_rows > 0 ? rows / group_rows : 1;
  const std::string expected = "f32 [" + std::to_string(groups) + ", " + std::to_string(k_blocks) +
                               ", " + std::to_string(group_rows) +
                               "] (groups, K / 128, rows per group: MN-major) on " +
                               device_name(Device{device, 0});
  const bool rows_ok = group_rows == 0 ? rows == 0 : group_rows > 0 && rows % group_rows == 0;
  const bool shape_ok = scale.defined() && rows_ok &&
                        ((scale.ndim() == 3 && scale.size(0) == groups &&
                          scale.size(1) == k_blocks && scale.size(2) == group_rows) ||
                         (groups == 1 && scale.ndim() == 2 && scale.size(0) == k_blocks &&
                          scale.size(1) == group_rows));
  check_arg(shape_ok && scale.dtype() == DType::kF32 && scale.is_contiguous() &&
                scale.device().type == device,
            name, expected, scale.defined() ? scale.shape_string() : std::string("none"));
}

}  // namespace moerun::detail
