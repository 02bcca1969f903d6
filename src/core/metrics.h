// Error metrics: how results are compared with the oracle (DESIGN.md, Numerics).
#pragma once

#include <vector>

#include "moerun/tensor.h"

namespace moerun {

// ||actual - reference|| / ||reference|| over all elements (2-norms, fp64). `actual` is a host
// bf16 or f32 tensor with as many elements as `reference`. Any NaN or infinity in `actual` gives
// +infinity, so it can never pass a tolerance. A zero reference gives the absolute norm.
double relative_error(const TensorView& actual, const std::vector<double>& reference);

// The same, between two host tensors of bf16/f32/fp8 values.
double relative_error(const TensorView& actual, const TensorView& reference);

// Widens a host bf16/f32/fp8 tensor to fp64.
std::vector<double> to_double(const TensorView& values);

}  // namespace moerun
