// Standard EP's reduction on one host: the ranks' f32 partial outputs summed in the order added,
// then rounded to bf16 once (as the single-rank layer rounds its fp32 combine once).
#pragma once

#include <cstdint>

#include "moerun/host_tensor.h"

namespace moerun::cpu {

class PartialSum {
 public:
  // A zeroed [tokens, hidden] f32 sum.
  PartialSum(std::int64_t tokens, std::int64_t hidden);
  // sum += partial, partial a host f32 [tokens, hidden] tensor.
  void add(const TensorView& partial);
  // out = bf16(sum), out a host bf16 [tokens, hidden] tensor.
  void store_bf16(const TensorView& out) const;
  // The sum itself (f32 [tokens, hidden]), for a partial that is summed again elsewhere.
  const HostTensor& sum() const { return sum_; }

 private:
  HostTensor sum_;
};

}  // namespace moerun::cpu
