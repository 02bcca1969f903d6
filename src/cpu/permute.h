// CPU oracle: permute + quantize tokens into the masked or contiguous layout (DESIGN.md stage 3).
#pragma once

#include <cstdint>

#include "moerun/config.h"
#include "moerun/forward.h"
#include "moerun/host_tensor.h"

namespace moerun::cpu {

struct PermuteOptions {
  Layout layout = Layout::kMasked;
  // Masked: rows per expert, a multiple of `alignment` and >= T; 0 derives it from T.
  std::int64_t m_max = 0;
  // Row block of the GEMM: M_max is a multiple of it; contiguous segments are padded to it.
  std::int64_t alignment = 128;
};

struct Permuted {
  Layout layout = Layout::kMasked;
  std::int64_t m_max = 0;       // masked: rows reserved per expert
  std::int64_t expected_m = 0;  // ceil(T * k / E) with the global E: a GEMM heuristic hint
  std::int64_t m_sum = 0;       // contiguous: rows including padding
  // masked [E_l, M_max, H] or contiguous [M_sum, H]; fp8_e4m3 for FP8 weights, else bf16.
  // Rows past masked_m[e] (masked) and padding rows (contiguous) are never written nor read.
  HostTensor tokens;
  // FP8 only, f32, MN-major (core/scale_layout.h): [E_l, H / 128, M_max] or [H / 128, M_sum].
  HostTensor scales;
  HostTensor masked_m;   // [E_l] i32: valid rows per expert (both layouts)
  HostTensor m_indices;  // contiguous only: [M_sum] i32, local expert of each row, -1 = padding
  HostTensor src2dst;    // [T, k] i32: row of each (token, slot), -1 when skipped

  std::int64_t rows() const { return layout == Layout::kMasked ? masked_m.numel() * m_max : m_sum; }
};

// hidden [T, H] bf16, local_ids [T, k] i32 in [-1, E_l). The activation dtype is the weights'
// dtype (FP8 weights -> e4m3 with 1x128 scales; BF16 weights -> the bf16 rows untouched). FP8
// weights also take pre-quantized hidden states (fp8_e4m3 + [T, H / 128] f32 scales, finite and
// positive), copied as they are.
Permuted permute(const HiddenStates& hidden, const TensorView& local_ids, int num_local_experts,
                 int num_experts, DType weight_dtype, const PermuteOptions& options);

// The masked M_max for T tokens: T rounded up to `alignment`, at least one block.
std::int64_t masked_m_max(std::int64_t tokens, std::int64_t alignment);

}  // namespace moerun::cpu
