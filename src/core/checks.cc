#include "core/checks.h"

#include <cmath>
#include <string>

#include "moerun/errors.h"

namespace moerun::detail {

namespace {
std::string element(std::string_view name, std::int64_t row, std::int64_t col) {
  return std::string(name) + "[" + std::to_string(row) + ", " + std::to_string(col) + "]";
}
}  // namespace

void check_all_finite(const float* values, std::int64_t rows, std::int64_t cols,
                      std::string_view name) {
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(values[i])) {
      throw InvalidArgument(element(name, i / cols, i % cols), "a finite value",
                            std::to_string(values[i]));
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
