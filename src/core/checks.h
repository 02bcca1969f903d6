// Value checks shared by both backends' host code: each names the element that is wrong.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "moerun/tensor.h"
#include "moerun/weights.h"

namespace moerun::detail {

// Rejects the first non-finite value of a [rows, cols] f32 array as `name[row, col]`.
void check_all_finite(const float* values, std::int64_t rows, std::int64_t cols,
                      std::string_view name);

// Rejects topk_ids [T, k] unless every id is in [-1, num_experts) and a token's ids other than -1
// are distinct (so that an expert receives at most one row per token).
void check_topk_ids(const TensorView& topk_ids, int num_experts);

// Rejects topk_weights [T, k] with a non-finite weight.
void check_topk_weights(const TensorView& topk_weights, std::int64_t tokens, int top_k);

// Finiteness where a user's data enters: a NaN or an infinity there would turn the whole output
// into NaN without a word, so it is rejected with the tensor and its first bad element named.

// The flat index of the first element of a host view (bf16, f32 or fp8_e4m3) that is NaN or
// infinite (e4m3fn has NaN only); nullopt when every element is finite. Multithreaded; the first
// in index order whatever the thread count; `parallel` false keeps it on the calling thread (inside
// a parallel loop already).
std::optional<std::int64_t> first_non_finite(const TensorView& view, bool parallel = true);
// The same for f32 FP8 block scales, which must also be > 0: a zero scale silently zeroes its
// 128x128 block, a negative one flips its sign.
std::optional<std::int64_t> first_bad_scale(const TensorView& view, bool parallel = true);

// "[3, 17]": a flat index of `shape`, one index per dimension.
std::string index_text(const Shape& shape, std::int64_t flat);
// Element `flat` of a host view as text: "nan", "-inf", "0", "-0.5".
std::string value_text(const TensorView& view, std::int64_t flat);

inline constexpr std::string_view kFiniteValue = "a finite value";
inline constexpr std::string_view kPositiveScale = "a finite value > 0 (an FP8 block scale)";

// Reject "invalid NAME[i, j]: expected a finite value, got nan" (host views).
void check_finite(const TensorView& view, std::string_view name);
void check_scales(const TensorView& view, std::string_view name);
// Every weight finite and, for FP8, every block scale finite and > 0, naming w13, w13_scale, w2,
// w2_scale or correction_bias (host views).
void check_weight_values(const MoeWeights& weights);

// Checks FP8 activation scales in their MN-major layout (core/scale_layout.h): contiguous f32 on
// `device`, `rows` rows in groups of `group_rows`, shaped [rows / group_rows, k_blocks, group_rows]
// (with one group, [k_blocks, group_rows] too).
void check_act_scale(const TensorView& scale, std::string_view name, std::int64_t rows,
                     std::int64_t k_blocks, std::int64_t group_rows, DeviceType device);

}  // namespace moerun::detail
