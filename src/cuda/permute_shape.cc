#include "cuda/permute_shape.h"

#include <algorithm>

namespace moerun::cuda {

std::int64_t permute_chunks(std::int64_t slots) {
  return std::max<std::int64_t>(1, (slots + kPermuteChunk - 1) / kPermuteChunk);
}

std::int64_t contiguous_capacity(std::int64_t tokens, std::int64_t top_k, int num_local_experts) {
  const std::int64_t slots = tokens * top_k;
  const std::int64_t upper =
      slots + std::min<std::int64_t>(slots, num_local_experts) * (kPermuteAlignment - 1);
  return upper / kPermuteAlignment * kPermuteAlignment;  // m_sum is a multiple of 128 <= upper
}

std::size_t permute_workspace_bytes(std::int64_t tokens, std::int64_t top_k,
                                    int num_local_experts) {
  return static_cast<std::size_t>(permute_chunks(tokens * top_k)) *
         static_cast<std::size_t>(num_local_experts) * sizeof(int);
}

}  // namespace moerun::cuda
