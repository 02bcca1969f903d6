// Where the FP8 activation scales live (one fp32 per row per 128 columns of K; DESIGN.md stage 3).
//
// They are stored MN-major: for each group of `group_rows` rows (masked layout: one expert's M_max
// rows; contiguous layout: all M_sum rows; a plain [rows, K] matrix: all its rows) a
// [K / 128, group_rows] matrix, so the scales a GEMM tile needs for one 128-wide K block are one
// contiguous run of rows that the copy engine loads with the tile (the row-major [rows, K / 128]
// layout would scatter them 4 bytes per row). As tensors: masked [E_l, K / 128, M_max],
// contiguous [K / 128, M_sum].
#pragma once

#include <cstdint>

#include "core/portable_math.h"  // MOERUN_HOST_DEVICE

namespace moerun {

struct ActScaleLayout {
  std::int64_t group_rows;  // rows per group (M_max or M_sum); a multiple of 4 for the GEMM
  std::int64_t k_blocks;    // K / 128

  // Offset of the scale of flattened row `row` (group * group_rows + row in group), K block `kb`.
  MOERUN_HOST_DEVICE std::int64_t index(std::int64_t row, std::int64_t kb) const {
    const std::int64_t group = row / group_rows;
    return (group * k_blocks + kb) * group_rows + (row - group * group_rows);
  }
};

}  // namespace moerun
