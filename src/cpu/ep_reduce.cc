#include "cpu/ep_reduce.h"

#include <algorithm>

#include "moerun/errors.h"

namespace moerun::cpu {

PartialSum::PartialSum(std::int64_t tokens, std::int64_t hidden)
    : sum_(DType::kF32, {tokens, hidden}) {
  std::fill(sum_.data<float>(), sum_.data<float>() + sum_.numel(), 0.0f);
}

void PartialSum::add(const TensorView& partial) {
  check_tensor(partial, "EP partial output", DType::kF32, sum_.shape(), DeviceType::kCpu);
  const float* p = partial.data_as<const float>();
  float* s = sum_.data<float>();
  for (std::int64_t i = 0; i < sum_.numel(); ++i) s[i] += p[i];
}

void PartialSum::store_bf16(const TensorView& out) const {
  check_tensor(out, "out", DType::kBF16, sum_.shape(), DeviceType::kCpu);
  const float* s = sum_.data<float>();
  bf16* o = out.data_as<bf16>();
  for (std::int64_t i = 0; i < sum_.numel(); ++i) o[i] = float_to_bf16(s[i]);
}

}  // namespace moerun::cpu
