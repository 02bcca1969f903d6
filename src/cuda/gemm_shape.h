// The grouped GEMMs' size rules (cuda/gemm.h), in plain C++ without CUDA headers: the launchers
// check every problem with them, and tools check a problem with them before touching a device
// (`moerun bench-gemm` rejects a bad shape the same way on a machine without a GPU).
#pragma once

#include <cstdint>
#include <string>

#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun::cuda {

// Rows per overlap counter (one math warpgroup's rows; tiles are 64 or 128 rows): the masked
// M_max must be a multiple of it (the layer's is a multiple of 128), and it is the report's
// block_m.
inline constexpr int kGemmBlockM = 64;
// Contiguous layout: every expert's segment of rows, and so M_sum, is a multiple of this.
inline constexpr int kGemmContiguousAlignM = 128;

// Masked A is [E_l, M_max, K].
inline void check_gemm_masked_m_max(std::int64_t m_max) {
  check_arg(m_max % kGemmBlockM == 0, "M_max", "a multiple of " + std::to_string(kGemmBlockM),
            m_max);
}

// Contiguous A is [M_sum, K].
inline void check_gemm_contiguous_m_sum(std::int64_t m_sum) {
  check_arg(m_sum % kGemmContiguousAlignM == 0, "M_sum",
            "a multiple of " + std::to_string(kGemmContiguousAlignM), m_sum);
}

// `experts` weight matrices [N, K] against `rows` activation rows (masked: E_l x M_max; contiguous:
// M_sum), FP8 (e4m3 with 128-wide scale blocks) or BF16.
inline void check_gemm_sizes(bool fp8, std::int64_t experts, std::int64_t rows, std::int64_t n,
                             std::int64_t k) {
  // TMA: every row of A, B and out starts 16-byte aligned.
  check_arg(k % 8 == 0 && k > 0, "K", "a positive multiple of 8", k);
  check_arg(n % 8 == 0 && n > 0, "N", "a positive multiple of 8", n);
  // Tile indices are 32-bit (rows / 64 x N / 128 tiles), and so are TMA coordinates.
  check_arg(
      rows < (std::int64_t{1} << 31) && (rows / 64 + 1) * (n / 128 + 1) < (std::int64_t{1} << 31),
      "GEMM size", "rows < 2^31 and fewer than 2^31 64 x 128 tiles", rows);
  check_arg(experts * n * k * 2 < (std::int64_t{1} << 40) && rows * k * 2 < (std::int64_t{1} << 40),
            "GEMM operand bytes", "< 2^40 (TMA strides)", experts * n * k);
  if (fp8) {
    check_arg(n % kQuantGroup == 0 && k % kQuantGroup == 0, "B (weights) N x K",
              "multiples of 128 for FP8", std::to_string(n) + " x " + std::to_string(k));
    // The kernel's weight-scale offsets are 32-bit.
    check_arg(experts * (n / kQuantGroup) * (k / kQuantGroup) < (std::int64_t{1} << 31), "B scale",
              "fewer than 2^31 blocks", experts * (n / kQuantGroup) * (k / kQuantGroup));
  }
}

}  // namespace moerun::cuda
