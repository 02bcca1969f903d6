// Tolerances of the CUDA backend against the CPU oracle, in one place (relative error
// ||gpu - ref|| / ||ref||, DESIGN.md Numerics). Stages the kernels compute with the oracle's exact
// operations are compared bit for bit and need no entry: dispatch, permute + FP8 quantization,
// SiLU-and-mul (+ FP8 re-quantization), combine; routing ids are exact and weights within 1 ulp.
#pragma once

namespace moerun::test {

// Grouped GEMM vs the oracle's GEMM on the same inputs: only the fp32 summation order differs
// (then both round to bf16), so a few bf16 ulps on a small fraction of elements.
inline constexpr double kGemmToleranceBf16 = 2e-3;
inline constexpr double kGemmToleranceFp8 = 2e-3;

// The whole layer vs the oracle's layer (same layout). BF16: GEMM ordering differences, carried
// through the activation. FP8: the same, plus the activation's re-quantization turning a bf16 ulp
// of gate_up into a different e4m3 code now and then (1/16 relative each).
inline constexpr double kLayerVsOracleBf16 = 5e-3;
inline constexpr double kLayerVsOracleFp8 = 1.5e-2;

// The whole layer vs the fp64 dense reference: DESIGN.md's end-to-end tolerances
// (src/core/tolerances.h).

}  // namespace moerun::test
