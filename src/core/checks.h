// Value checks shared by both backends' host code: each names the element that is wrong.
#pragma once

#include <cstdint>
#include <string_view>

#include "moerun/tensor.h"

namespace moerun::detail {

// Rejects the first non-finite value of a [rows, cols] f32 array as `name[row, col]`.
void check_all_finite(const float* values, std::int64_t rows, std::int64_t cols,
                      std::string_view name);

// Rejects topk_ids [T, k] unless every id is in [-1, num_experts) and a token's ids other than -1
// are distinct (so that an expert receives at most one row per token).
void check_topk_ids(const TensorView& topk_ids, int num_experts);

// Rejects topk_weights [T, k] with a non-finite weight.
void check_topk_weights(const TensorView& topk_weights, std::int64_t tokens, int top_k);

// Checks FP8 activation scales in their MN-major layout (core/scale_layout.h): contiguous f32 on
// `device`, `rows` rows in groups of `group_rows`, shaped [rows / group_rows, k_blocks, group_rows]
// (with one group, [k_blocks, group_rows] too).
void check_act_scale(const TensorView& scale, std::string_view name, std::int64_t rows,
                     std::int64_t k_blocks, std::int64_t group_rows, DeviceType device);

}  // namespace moerun::detail
