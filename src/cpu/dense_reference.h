// The fp64 dense reference of the layer: every token through its k experts, no permutation, no
// intermediate rounding. End-to-end errors are measured against it.
#pragma once

#include <vector>

#include "core/progress.h"
#include "moerun/config.h"
#include "moerun/weights.h"

namespace moerun::cpu {

// hidden [T, H] bf16; topk_ids [T, k] global ids in [-1, E); topk_weights [T, k] f32;
// all_weights hold all E experts (FP8 weights are dequantized exactly: code x block scale).
// Returns out [T, H] row-major in fp64, times config.output_scale.
//
// With FP8 weights the layer's contract quantizes the activations (the input rows and the SiLU
// output) to e4m3 in 1x128 groups. kRecipe applies exactly those two quantizations and nothing
// else; kNone keeps the activations exact, which measures the recipe's own quantization error
// (about 4% relative on Gaussian data, inherent to e4m3's 3 mantissa bits). BF16 weights: same.
enum class ActivationQuantization { kRecipe, kNone };

std::vector<double> dense_reference(
    const MoeConfig& config, const MoeWeights& all_weights, const TensorView& hidden,
    const TensorView& topk_ids, const TensorView& topk_weights,
    ActivationQuantization activations = ActivationQuantization::kRecipe,
    const ProgressFn& progress = {});

}  // namespace moerun::cpu
