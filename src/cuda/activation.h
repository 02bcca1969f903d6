// CUDA stage 5: SiLU-and-mul in fp32, stored bf16 or re-quantized to FP8 1x128 (DESIGN.md stage 5;
// oracle cpu/activation.h). Bit-exact with the oracle given the same gate_up.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moerun/config.h"
#include "moerun/tensor.h"

namespace moerun::cuda {

// Which rows of a permuted buffer hold tokens (the device counterpart of cpu/row_segments.h), as
// permute lays them out: expert e's masked_m[e] rows start at e * m_max (masked) or, contiguous,
// at the sum of the earlier experts' counts each rounded up to kPermuteAlignment rows.
struct RowSet {
  Layout layout = Layout::kMasked;
  TensorView masked_m;     // [E_l] i32 (device): rows per expert, both layouts
  std::int64_t m_max = 0;  // masked only
  // At most this many rows hold tokens (T * k, say); 0 = unknown. Sizes the launch; never affects
  // the result.
  std::int64_t max_rows_with_tokens = 0;
};

// gate_up [rows, 2I] bf16 (columns [0, I) gate, [I, 2I) up; leading dims flatten to rows).
// out [rows, I]: bf16, or fp8_e4m3 with out_scale f32, MN-major (core/scale_layout.h): masked
// [E_l, I / 128, M_max], contiguous [I / 128, rows]. Only rows in `rows` are
// read and written. y = silu_f32(gate) * up in fp32 (core/portable_math.h: the oracle's function,
// the same bits on host and device), each operation IEEE round-to-nearest with no contraction.
void silu_and_mul(const TensorView& gate_up, const RowSet& rows, const TensorView& out,
                  const TensorView& out_scale, cudaStream_t stream);

}  // namespace moerun::cuda
