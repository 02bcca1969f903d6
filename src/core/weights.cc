#include "moerun/weights.h"

#include <string>

#include "moerun/errors.h"

namespace moerun {

void MoeWeights::validate(const MoeConfig& config, int num_experts, Device device) const {
  const std::int64_t h = config.hidden_size, i = config.intermediate_size;
  check_tensor(w13, "w13", config.weight_dtype, {num_experts, 2 * i, h}, device);
  check_tensor(w2, "w2", config.weight_dtype, {num_experts, h, i}, device);
  if (config.is_fp8()) {
    check_tensor(w13_scale, "w13_scale", DType::kF32,
                 {num_experts, 2 * i / kQuantGroup, h / kQuantGroup}, device);
    check_tensor(w2_scale, "w2_scale", DType::kF32, {num_experts, h / kQuantGroup, i / kQuantGroup},
                 device);
  } else {
    check_arg(!w13_scale.defined() && !w2_scale.defined(), "w13_scale/w2_scale",
              "none for BF16 weights", "a scale tensor");
  }
  if (correction_bias.defined()) {
    check_arg(config.routing.mode == RoutingMode::kGroupedTopK, "correction_bias",
              "none for softmax routing", correction_bias.shape_string());
    check_tensor(correction_bias, "correction_bias", DType::kF32, {config.num_experts}, device);
  }
}

namespace {
TensorView slice_dim0(const TensorView& t, int first, int count) {
  if (!t.defined()) return t;
  check_arg(first >= 0 && count >= 0 && first + count <= t.size(0), "expert slice",
            "within [0, " + std::to_string(t.size(0)) + ")",
            std::to_string(first) + " + " + std::to_string(count));
  const std::int64_t per_expert = t.numel() / std::max<std::int64_t>(1, t.size(0));
  auto* base = static_cast<std::byte*>(t.data());
  auto* data = base + static_cast<std::size_t>(first * per_expert) * dtype_size(t.dtype());
  return TensorView(data, t.dtype(), {count, t.size(1), t.size(2)}, t.device());
}
}  // namespace

MoeWeights MoeWeights::slice_experts(int first, int count) const {
  return {slice_dim0(w13, first, count), slice_dim0(w13_scale, first, count),
          slice_dim0(w2, first, count), slice_dim0(w2_scale, first, count), correction_bias};
}

}  // namespace moerun
