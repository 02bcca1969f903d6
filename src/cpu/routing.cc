#include "cpu/routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/checks.h"
#include "core/parallel.h"
#include "core/portable_math.h"
#include "moerun/errors.h"

namespace moerun::cpu {

namespace {

// Indices of the k largest values, best first; equal values keep the lower index first.
void top_indices(const std::vector<float>& values, const std::vector<int>& candidates, int k,
                 std::vector<int>& out) {
  out = candidates;
  std::partial_sort(out.begin(), out.begin() + k, out.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  out.resize(static_cast<std::size_t>(k));
}

void route_softmax(const RoutingConfig& config, int num_experts, const float* logits, int* ids,
                   float* weights) {
  const int k = config.top_k;
  std::vector<float> row(logits, logits + num_experts);
  std::vector<int> all(static_cast<std::size_t>(num_experts));
  std::iota(all.begin(), all.end(), 0);
  std::vector<int> chosen;
  // Softmax is monotone, so choosing on logits equals choosing on probabilities, and ties are
  // exact ties of the inputs rather than of rounded probabilities.
  top_indices(row, all, k, chosen);
  const double max_logit = row[static_cast<std::size_t>(chosen[0])];
  double denominator = 0.0;
  if (config.renormalize) {
    for (int e : chosen) denominator += std::exp(row[e] - max_logit);
  } else {
    for (float l : row) denominator += std::exp(l - max_logit);
  }
  for (int j = 0; j < k; ++j) {
    ids[j] = chosen[j];
    weights[j] = static_cast<float>(std::exp(row[chosen[j]] - max_logit) / denominator);
  }
}

void route_grouped(const RoutingConfig& config, int num_experts, const float* logits,
                   const float* bias, int* ids, float* weights) {
  const int k = config.top_k;
  const int groups = config.num_groups;
  const int group_size = num_experts / groups;
  std::vector<float> scores(static_cast<std::size_t>(num_experts));
  std::vector<float> choice(static_cast<std::size_t>(num_experts));
  for (int e = 0; e < num_experts; ++e) {
    scores[e] = detail::sigmoid_f32(logits[e]);
    // The bias steers the choice only; the weights come from the unbiased scores.
    choice[e] = scores[e] + (bias ? bias[e] : 0.0f);
  }
  std::vector<float> group_score(static_cast<std::size_t>(groups));
  std::vector<int> members(static_cast<std::size_t>(group_size));
  std::vector<int> best;
  for (int g = 0; g < groups; ++g) {
    std::iota(members.begin(), members.end(), g * group_size);
    top_indices(choice, members, 2, best);
    group_score[g] = choice[best[0]] + choice[best[1]];
  }
  std::vector<int> all_groups(static_cast<std::size_t>(groups));
  std::iota(all_groups.begin(), all_groups.end(), 0);
  std::vector<int> kept_groups;
  top_indices(group_score, all_groups, config.topk_groups, kept_groups);
  std::sort(kept_groups.begin(), kept_groups.end());
  std::vector<int> candidates;
  for (int g : kept_groups) {
    for (int e = g * group_size; e < (g + 1) * group_size; ++e) candidates.push_back(e);
  }
  std::vector<int> chosen;
  top_indices(choice, candidates, k, chosen);
  double denominator = 1.0;
  if (config.renormalize) {
    denominator = 0.0;
    for (int e : chosen) denominator += scores[e];
  }
  for (int j = 0; j < k; ++j) {
    ids[j] = chosen[j];
    weights[j] = static_cast<float>(scores[chosen[j]] / denominator * config.routed_scaling_factor);
  }
}

}  // namespace

TopK route(const RoutingConfig& config, int num_experts, const TensorView& router_logits,
           const TensorView& correction_bias) {
  check_arg(router_logits.ndim() == 2, "router_logits rank", "2 ([T, E])", router_logits.ndim());
  const std::int64_t tokens = router_logits.size(0);
  check_tensor(router_logits, "router_logits", DType::kF32, {tokens, num_experts},
               DeviceType::kCpu);
  const float* bias = nullptr;
  if (correction_bias.defined()) {
    check_arg(config.mode == RoutingMode::kGroupedTopK, "correction_bias",
              "none for softmax routing", correction_bias.shape_string());
    check_tensor(correction_bias, "correction_bias", DType::kF32, {num_experts}, DeviceType::kCpu);
    bias = correction_bias.data_as<const float>();
    detail::check_all_finite(bias, num_experts, 1, "correction_bias");
  }
  const auto* logits = router_logits.data_as<const float>();
  detail::check_all_finite(logits, tokens, num_experts, "router_logits");

  const int k = config.top_k;
  TopK result{HostTensor(DType::kI32, {tokens, k}), HostTensor(DType::kF32, {tokens, k})};
  int* ids = result.ids.data<int>();
  float* weights = result.weights.data<float>();
  detail::parallel_for(tokens, 64, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; ++t) {
      const float* row = logits + t * num_experts;
      if (config.mode == RoutingMode::kSoftmaxTopK) {
        route_softmax(config, num_experts, row, ids + t * k, weights + t * k);
      } else {
        route_grouped(config, num_experts, row, bias, ids + t * k, weights + t * k);
      }
    }
  });
  return result;
}

}  // namespace moerun::cpu
