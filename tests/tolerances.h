// The tolerance table, the one place for every test's allowance: relative error
// ||actual - reference|| / ||reference||, per comparison and dtype. Stages that are bit-exact by
// construction are compared bitwise instead and have no entry (DESIGN.md Numerics): dispatch,
// permute + FP8 quantization, SiLU-and-mul (+ FP8 re-quantization), combine; routing ids are
// exact and weights within 1 float ulp.
#pragma once

#include "core/tolerances.h"

namespace moerun::test {

// The CPU grouped GEMM against an fp64 product of the same (rounded) operands: fp32 accumulation
// and one bf16 rounding of the output (2^-9 relative, ~2^-10 RMS). FP8 operands are exact inputs
// too, so the same bound holds.
inline constexpr double kGemmVsFp64Bf16 = 4e-3;
inline constexpr double kGemmVsFp64Fp8 = 4e-3;

// The CUDA grouped GEMM against the CPU oracle's GEMM on the same inputs: only the fp32 summation
// order differs (then both round to bf16), so a few bf16 ulps on a small fraction of elements.
inline constexpr double kGemmVsOracleBf16 = 2e-3;
inline constexpr double kGemmVsOracleFp8 = 2e-3;

// The CUDA layer against the oracle's layer (same layout). BF16: GEMM ordering differences,
// carried through the activation. FP8: the same, plus the activation's re-quantization turning a
// bf16 ulp of gate_up into a different e4m3 code now and then (1/16 relative each).
inline constexpr double kLayerVsOracleBf16 = 5e-3;
inline constexpr double kLayerVsOracleFp8 = 1.5e-2;

// The whole layer against the fp64 dense reference: DESIGN.md's end-to-end tolerances, which the
// CLI applies too (src/core/tolerances.h is their one definition).
inline constexpr double kLayerBf16 = kLayerToleranceBf16;
inline constexpr double kLayerFp8 = kLayerToleranceFp8;

// Standard EP against one rank (src/core/tolerances.h, shared with `moerun ep-check`).
using moerun::kStandardEpVsSingleRank;

}  // namespace moerun::test
