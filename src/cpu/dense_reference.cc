#include "cpu/dense_reference.h"

#include <cmath>
#include <utility>

#include "core/checks.h"
#include "core/parallel.h"
#include "cpu/quant.h"
#include "moerun/errors.h"

namespace moerun::cpu {

namespace {

// Row `row` of expert weight matrix [N, K] (block-scaled FP8 or BF16) widened to fp64.
void weight_row(const TensorView& w, const TensorView& scale, int expert, std::int64_t row,
                std::vector<double>& dst) {
  const std::int64_t n = w.size(1), k = w.size(2);
  const std::int64_t offset = (expert * n + row) * k;
  if (w.dtype() == DType::kFP8E4M3) {
    const std::int64_t k_blocks = k / kQuantGroup;
    const float* s =
        scale.data_as<const float>() + (expert * (n / kQuantGroup) + row / kQuantGroup) * k_blocks;
    const auto* codes = w.data_as<const fp8e4m3>() + offset;
    for (std::int64_t c = 0; c < k; ++c) {
      dst[c] = static_cast<double>(fp8e4m3_to_float(codes[c])) * s[c / kQuantGroup];
    }
  } else {
    const auto* values = w.data_as<const bf16>() + offset;
    for (std::int64_t c = 0; c < k; ++c) dst[c] = bf16_to_float(values[c]);
  }
}

// Replaces `count` values by their FP8 1x128 quantize-dequantize round trip (code x scale).
void fp8_round_trip(double* values, std::int64_t count) {
  std::vector<float> v(values, values + count);
  std::vector<fp8e4m3> codes(static_cast<std::size_t>(count));
  std::vector<float> scales(static_cast<std::size_t>(count / kQuantGroup));
  quantize_row_fp8(v.data(), count, codes.data(), scales.data());
  for (std::int64_t c = 0; c < count; ++c) {
    values[c] = static_cast<double>(fp8e4m3_to_float(codes[c])) * scales[c / kQuantGroup];
  }
}

}  // namespace

std::vector<double> dense_reference(const MoeConfig& config, const MoeWeights& all_weights,
                                    const TensorView& hidden, const TensorView& topk_ids,
                                    const TensorView& topk_weights,
                                    ActivationQuantization activations,
                                    const ProgressFn& progress) {
  config.validate();
  all_weights.validate(config, config.num_experts, Device{});
  const std::int64_t tokens = hidden.size(0), h = config.hidden_size,
                     inter = config.intermediate_size;
  const int k = config.top_k();
  check_tensor(hidden, "hidden_states", DType::kBF16, {tokens, h}, DeviceType::kCpu);
  detail::check_topk_ids(topk_ids, config.num_experts);
  check_arg(topk_ids.size(1) == k, "topk_ids k", std::to_string(k), topk_ids.size(1));
  detail::check_topk_weights(topk_weights, tokens, k);

  // (token, slot) pairs per expert, in token order.
  std::vector<std::vector<std::pair<std::int64_t, int>>> routed(
      static_cast<std::size_t>(config.num_experts));
  const int* ids = topk_ids.data_as<const int>();
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < k; ++j) {
      if (ids[t * k + j] >= 0) routed[ids[t * k + j]].emplace_back(t, j);
    }
  }
  const bool quantize = config.is_fp8() && activations == ActivationQuantization::kRecipe;
  std::vector<double> x(static_cast<std::size_t>(tokens * h));
  for (std::int64_t i = 0; i < tokens * h; ++i)
    x[i] = bf16_to_float(hidden.data_as<const bf16>()[i]);
  if (quantize) {
    for (std::int64_t t = 0; t < tokens; ++t) fp8_round_trip(x.data() + t * h, h);
  }
  const float* weights = topk_weights.data_as<const float>();
  std::vector<double> out(static_cast<std::size_t>(tokens * h), 0.0);

  // Experts run one after another; inside one, threads split the output columns, so no two
  // threads ever add into the same element.
  for (int e = 0; e < config.num_experts; ++e) {
    const auto& pairs = routed[e];
    const auto m = static_cast<std::int64_t>(pairs.size());
    if (m == 0) continue;
    std::vector<double> gate_up(static_cast<std::size_t>(m * 2 * inter));
    detail::parallel_for(2 * inter, 16, [&](std::int64_t begin, std::int64_t end) {
      std::vector<double> w(static_cast<std::size_t>(h));
      for (std::int64_t n = begin; n < end; ++n) {
        weight_row(all_weights.w13, all_weights.w13_scale, e, n, w);
        for (std::int64_t r = 0; r < m; ++r) {
          const double* xr = x.data() + pairs[r].first * h;
          double acc = 0.0;
          for (std::int64_t c = 0; c < h; ++c) acc += xr[c] * w[c];
          gate_up[r * 2 * inter + n] = acc;
        }
      }
    });
    std::vector<double> act(static_cast<std::size_t>(m * inter));
    for (std::int64_t r = 0; r < m; ++r) {
      for (std::int64_t c = 0; c < inter; ++c) {
        const double g = gate_up[r * 2 * inter + c], u = gate_up[r * 2 * inter + inter + c];
        act[r * inter + c] = g / (1.0 + std::exp(-g)) * u;
      }
      if (quantize) fp8_round_trip(act.data() + r * inter, inter);
    }
    detail::parallel_for(h, 16, [&](std::int64_t begin, std::int64_t end) {
      std::vector<double> w(static_cast<std::size_t>(inter));
      for (std::int64_t n = begin; n < end; ++n) {
        weight_row(all_weights.w2, all_weights.w2_scale, e, n, w);
        for (std::int64_t r = 0; r < m; ++r) {
          const double* ar = act.data() + r * inter;
          double acc = 0.0;
          for (std::int64_t c = 0; c < inter; ++c) acc += ar[c] * w[c];
          const auto [t, j] = pairs[r];
          out[t * h + n] += static_cast<double>(weights[t * k + j]) * acc;
        }
      }
    });
    if (progress) progress(static_cast<double>(e + 1) / config.num_experts);
  }
  for (double& v : out) v *= static_cast<double>(config.output_scale);
  return out;
}

}  // namespace moerun::cpu
