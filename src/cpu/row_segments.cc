#include "cpu/row_segments.h"

#include <string>

#include "moerun/errors.h"

namespace moerun::cpu {

std::vector<RowSegment> masked_segments(const TensorView& masked_m, std::int64_t m_max) {
  check_tensor(masked_m, "masked_m", DType::kI32, {masked_m.size(0)}, DeviceType::kCpu);
  std::vector<RowSegment> segments;
  const int* counts = masked_m.data_as<const int>();
  for (int e = 0; e < masked_m.size(0); ++e) {
    const std::string field = "masked_m[" + std::to_string(e) + "]";
    check_arg(counts[e] >= 0 && counts[e] <= m_max, field,
              "a row count in [0, M_max = " + std::to_string(m_max) + "]", counts[e]);
    if (counts[e] > 0) segments.push_back({e, e * m_max, e * m_max + counts[e]});
  }
  return segments;
}

std::vector<RowSegment> contiguous_segments(const TensorView& m_indices, int num_local_experts) {
  check_tensor(m_indices, "m_indices", DType::kI32, {m_indices.size(0)}, DeviceType::kCpu);
  std::vector<RowSegment> segments;
  const int* ids = m_indices.data_as<const int>();
  const std::int64_t rows = m_indices.size(0);
  for (std::int64_t r = 0; r < rows;) {
    const int e = ids[r];
    check_arg(e >= -1 && e < num_local_experts, "m_indices[" + std::to_string(r) + "]",
              "a local expert id in [-1, " + std::to_string(num_local_experts) + ")", e);
    std::int64_t end = r + 1;
    while (end < rows && ids[end] == e) ++end;
    if (e >= 0) segments.push_back({e, r, end});
    r = end;
  }
  return segments;
}

}  // namespace moerun::cpu
