// The tolerance table: relative error ||actual - reference|| / ||reference|| allowed per stage and
// dtype. Stages that are bit-exact by construction are compared bitwise instead and have no entry.
#pragma once

#include "core/tolerances.h"

namespace moerun::test {

// A grouped GEMM against an fp64 product of the same (rounded) operands: fp32 accumulation and
// one bf16 rounding of the output (2^-9 relative, ~2^-10 RMS).
inline constexpr double kGemmToleranceBf16 = 4e-3;
// FP8 operands are exact inputs too, so the same bound holds.
inline constexpr double kGemmToleranceFp8 = 4e-3;

// The whole layer against the fp64 dense reference (DESIGN.md): bf16 1e-2, FP8 3e-2.
inline constexpr double kLayerBf16 = kLayerToleranceBf16;
inline constexpr double kLayerFp8 = kLayerToleranceFp8;

// Standard EP against one rank (src/core/tolerances.h, shared with `moerun ep-check`).
using moerun::kStandardEpVsSingleRank;

}  // namespace moerun::test
