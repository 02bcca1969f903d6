// CPU oracle: the weighted combine (DESIGN.md stage 7).
#pragma once

#include "moerun/tensor.h"

namespace moerun::cpu {

// out[t] = output_scale * (sum over slots j with src2dst[t, j] >= 0 of topk_weights[t, j] *
// down[src2dst[t, j]]): the sum accumulated in fp32 in slot order, multiplied by the scale in
// fp32, then stored once: bf16, or f32 for a partial result that an EP reduction sums. down: [rows,
// H] bf16 (leading dims flatten to rows); src2dst, topk_weights: [T, k]; out [T, H]. A token with
// no local slot gets zeros.
void combine(const TensorView& down, const TensorView& src2dst, const TensorView& topk_weights,
             const TensorView& out, float output_scale = 1.0f);

}  // namespace moerun::cpu
