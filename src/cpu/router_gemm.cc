#include "cpu/router_gemm.h"

#include <vector>

#include "core/parallel.h"
#include "moerun/errors.h"

namespace moerun::cpu {

HostTensor router_logits(const TensorView& hidden, const TensorView& gate_weight) {
  check_arg(hidden.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.ndim());
  check_arg(gate_weight.ndim() == 2, "router gate weight rank", "2 ([E, H])", gate_weight.ndim());
  const std::int64_t tokens = hidden.size(0), h = hidden.size(1), experts = gate_weight.size(0);
  check_tensor(hidden, "hidden_states", DType::kBF16, {tokens, h}, DeviceType::kCpu);
  check_tensor(gate_weight, "router gate weight", DType::kF32, {experts, h}, DeviceType::kCpu);
  HostTensor logits(DType::kF32, {tokens, experts});
  const auto* x = hidden.data_as<const bf16>();
  const auto* w = gate_weight.data_as<const float>();
  float* out = logits.data<float>();
  detail::parallel_for(tokens, 4, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> row(static_cast<std::size_t>(h));
    for (std::int64_t t = begin; t < end; ++t) {
      for (std::int64_t c = 0; c < h; ++c) row[c] = bf16_to_float(x[t * h + c]);
      for (std::int64_t e = 0; e < experts; ++e) {
        const float* we = w + e * h;
        float acc = 0.0f;
        for (std::int64_t c = 0; c < h; ++c) acc += row[c] * we[c];
        out[t * experts + e] = acc;
      }
    }
  });
  return logits;
}

}  // namespace moerun::cpu
