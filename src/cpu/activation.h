// CPU oracle: SiLU-and-mul in fp32, stored bf16 or re-quantized to FP8 1x128 (DESIGN.md stage 5).
#pragma once

#include <vector>

#include "cpu/row_segments.h"
#include "moerun/tensor.h"

namespace moerun::cpu {

// gate_up [rows, 2I] bf16 (columns [0, I) gate, [I, 2I) up; any leading dims flatten to rows).
// out [rows, I]: bf16, or fp8_e4m3 with out_scale f32 (the down GEMM's A scales), MN-major
// (core/scale_layout.h): [E_l, I / 128, M_max] (masked) or [I / 128, rows] (contiguous).
// Only rows inside `segments` are read and written: the rest hold no token.
// y = silu(gate) * up = gate / (1 + exp(-gate)) * up, every step in fp32, one rounding at the end.
void silu_and_mul(const TensorView& gate_up, const std::vector<RowSegment>& segments,
                  const TensorView& out, const TensorView& out_scale = {});

}  // namespace moerun::cpu
