// `moerun run`'s check against the fp64 dense reference (cpu/dense_reference.h), over every row
// of the batch or a sample of them: the reference costs k dense expert passes per row in fp64,
// minutes for a large model's full batch on a CPU, so the default checks a few rows spread over
// the batch.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "core/progress.h"
#include "moerun/config.h"
#include "moerun/tensor.h"
#include "moerun/weights.h"

namespace moerun::tools {

enum class ReferenceRows : std::uint8_t { kFull, kSampled, kNone };
// "full" | "sampled" | "none" (the option's own check has already rejected anything else).
ReferenceRows parse_reference(std::string_view value);
std::string_view reference_rows_name(ReferenceRows rows);

// Rows a sampled reference checks at most.
inline constexpr std::int64_t kSampledRows = 16;

// The rows to check: all T, none, or min(T, kSampledRows) rows spread evenly over [0, T), the
// first and the last included.
std::vector<std::int64_t> reference_rows(ReferenceRows mode, std::int64_t tokens);

// Flags of the experts of [0, num_experts) that `rows` of topk_ids [T, k] (host) route to.
std::vector<bool> experts_of_rows(const TensorView& topk_ids, const std::vector<std::int64_t>& rows,
                                  int num_experts);

// One part of the layer output: a MoE layer (EP 1, its weights holding all of its experts on the
// host) and the routing of every row ([T, k] host views).
struct ReferencePart {
  MoeConfig config;
  MoeWeights weights;
  TensorView topk_ids;
  TensorView topk_weights;
};

struct ReferenceResult {
  std::int64_t rows = 0;
  double error = 0.0;  // relative error of the checked rows of `out`
  // FP8 only, when asked: the same rows against a reference with unquantized activations (what
  // the FP8 recipe itself costs).
  std::optional<double> error_vs_unquantized;
};

// ||out[rows] - ref[rows]|| / ||ref[rows]||, ref the sum of the parts' dense references on the
// rows. out: host [T, H] bf16 or f32; hidden: host [T, H] bf16.
ReferenceResult check_rows(const TensorView& out, const TensorView& hidden,
                           const std::vector<ReferencePart>& parts,
                           const std::vector<std::int64_t>& rows, bool also_unquantized,
                           const ProgressFn& progress = {});

}  // namespace moerun::tools
