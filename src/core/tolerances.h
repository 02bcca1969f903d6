// End-to-end tolerances of the layer against the fp64 dense reference (DESIGN.md, Numerics):
// relative error ||out - ref|| / ||ref||, as the CLI applies them. The tests' table
// (tests/tolerances.h) takes these from here and holds every other tolerance.
#pragma once

#include "moerun/dtype.h"

namespace moerun {

inline constexpr double kLayerToleranceBf16 = 1e-2;
inline constexpr double kLayerToleranceFp8 = 3e-2;

// Standard EP over R ranks against one rank (the `moerun ep-check` command and the tests): the
// same math summed in another order, then one bf16 rounding; differences are isolated 1-ulp flips.
inline constexpr double kStandardEpVsSingleRank = 2e-3;

inline double layer_tolerance(DType weight_dtype) {
  return weight_dtype == DType::kFP8E4M3 ? kLayerToleranceFp8 : kLayerToleranceBf16;
}

}  // namespace moerun
