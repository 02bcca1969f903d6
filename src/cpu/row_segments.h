// Which rows of a permuted buffer hold real tokens: one segment per expert.
#pragma once

#include <cstdint>
#include <vector>

#include "moerun/tensor.h"

namespace moerun::cpu {

struct RowSegment {
  int expert;          // local expert id
  std::int64_t begin;  // first row (flattened over the layout's leading dims)
  std::int64_t end;    // one past the last valid row
};

// Masked layout: rows [e * m_max, e * m_max + masked_m[e]) for each e with masked_m[e] > 0.
std::vector<RowSegment> masked_segments(const TensorView& masked_m, std::int64_t m_max);

// Contiguous layout: maximal runs of equal m_indices >= 0; -1 padding rows belong to none.
std::vector<RowSegment> contiguous_segments(const TensorView& m_indices, int num_local_experts);

}  // namespace moerun::cpu
