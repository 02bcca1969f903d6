#include "core/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numbers>
#include <string>

#include "core/parallel.h"
#include "moerun/errors.h"

namespace moerun {

namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t hash(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  return mix(mix(seed ^ mix(stream)) ^ index);
}

// Streams keep the tensors of one seed independent of each other.
enum Stream : std::uint64_t { kW13 = 1, kW13Scale, kW2, kW2Scale, kBias, kHidden, kLogits };

// The root mean square of the 254 finite e4m3fn values: what uniform random codes spread to.
float fp8_code_rms() {
  static const float rms = [] {
    double sum = 0.0;
    int count = 0;
    for (int code = 0; code < 256; ++code) {
      if ((code & 0x7f) == 0x7f) continue;  // NaN
      const double v = fp8e4m3_to_float(fp8e4m3{static_cast<std::uint8_t>(code)});
      sum += v * v;
      ++count;
    }
    return static_cast<float>(std::sqrt(sum / count));
  }();
  return rms;
}

// Fills the wanted experts of `codes` ([E, N, K]) and, for FP8, of `scales` ([E, N/128, K/128]).
// One hash gives 8 FP8 codes or 4 bf16 values, so element i depends on (seed, stream, i / 8) only.
void fill_weight(HostTensor& codes, HostTensor& scales, std::uint64_t seed, Stream code_stream,
                 Stream scale_stream, std::int64_t fan_in, const std::vector<bool>& experts,
                 const std::function<void()>& expert_done) {
  const std::int64_t num_experts = codes.size(0);
  const std::int64_t per_expert = codes.numel() / num_experts;  // a multiple of 8 (K % 8 == 0)
  const float target_std = 1.0f / std::sqrt(static_cast<float>(fan_in));
  const bool fp8 = codes.dtype() == DType::kFP8E4M3;
  // The block scale maps the codes' spread onto the target, jittered by +-25% per block so that
  // scales matter.
  const float base_scale = target_std / fp8_code_rms();
  const std::int64_t scales_per_expert = fp8 ? scales.numel() / num_experts : 0;
  // Uniform in [-a, a] has standard deviation a / sqrt(3).
  const float bf16_range = target_std * std::numbers::sqrt3_v<float>;
  for (std::int64_t e = 0; e < num_experts; ++e) {
    if (!experts.empty() && !experts[static_cast<std::size_t>(e)]) continue;
    if (fp8) {
      float* s = scales.data<float>() + e * scales_per_expert;
      for (std::int64_t i = 0; i < scales_per_expert; ++i) {
        const auto index = static_cast<std::uint64_t>(e * scales_per_expert + i);
        s[i] = base_scale * (0.75f + 0.5f * uniform01(seed, scale_stream, index));
      }
    }
    const std::int64_t words = per_expert / (fp8 ? 8 : 4);
    const std::int64_t first_word = e * words;
    detail::parallel_for(words, 1 << 16, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t w = begin; w < end; ++w) {
        std::uint64_t bits = hash(seed, code_stream, static_cast<std::uint64_t>(first_word + w));
        if (fp8) {
          auto* out = codes.data<fp8e4m3>() + (first_word + w) * 8;
          for (int b = 0; b < 8; ++b, bits >>= 8) {
            auto code = static_cast<std::uint8_t>(bits);
            if ((code & 0x7f) == 0x7f) code ^= 1;  // 0x7f / 0xff are NaN in e4m3fn
            out[b] = fp8e4m3{code};
          }
        } else {
          bf16* out = codes.data<bf16>() + (first_word + w) * 4;
          for (int b = 0; b < 4; ++b, bits >>= 16) {
            const float u = (static_cast<float>(bits & 0xffff) + 0.5f) * 0x1p-16f;  // (0, 1)
            out[b] = float_to_bf16((2.0f * u - 1.0f) * bf16_range);
          }
        }
      }
    });
    if (expert_done) expert_done();
  }
}

}  // namespace

float uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  return static_cast<float>(hash(seed, stream, index) >> 40) * 0x1p-24f;
}

float standard_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  // Box-Muller on two independent uniforms; 1 - u keeps the log's argument in (0, 1].
  const double u1 = 1.0 - static_cast<double>(hash(seed, stream, 2 * index) >> 11) * 0x1p-53;
  const double u2 = static_cast<double>(hash(seed, stream, 2 * index + 1) >> 11) * 0x1p-53;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
}

MoeWeights HostMoeWeights::view() const {
  return {w13.view(), w13_scale.view(), w2.view(), w2_scale.view(), correction_bias.view()};
}

HostTensor random_correction_bias(const MoeConfig& config, std::uint64_t seed) {
  HostTensor bias(DType::kF32, {config.num_experts});
  for (int e = 0; e < config.num_experts; ++e) {
    bias.data<float>()[e] = 0.1f * standard_normal(seed, kBias, static_cast<std::uint64_t>(e));
  }
  return bias;
}

namespace {

HostTensor gather_rows(const TensorView& all, const std::vector<int>& experts) {
  if (!all.defined()) return {};
  const std::size_t per = all.nbytes() / static_cast<std::size_t>(all.size(0));
  HostTensor out(all.dtype(),
                 {static_cast<std::int64_t>(experts.size()), all.size(1), all.size(2)});
  for (std::size_t i = 0; i < experts.size(); ++i) {
    check_arg(experts[i] >= 0 && experts[i] < all.size(0), "expert to gather",
              "an id in [0, " + std::to_string(all.size(0)) + ")", experts[i]);
    std::memcpy(
        static_cast<std::byte*>(out.view().data()) + i * per,
        static_cast<const std::byte*>(all.data()) + static_cast<std::size_t>(experts[i]) * per,
        per);
  }
  return out;
}

}  // namespace

HostMoeWeights gather_experts(const MoeWeights& all, const std::vector<int>& experts) {
  HostMoeWeights out;
  out.w13 = gather_rows(all.w13, experts);
  out.w13_scale = gather_rows(all.w13_scale, experts);
  out.w2 = gather_rows(all.w2, experts);
  out.w2_scale = gather_rows(all.w2_scale, experts);
  return out;
}

HostMoeWeights random_weights(const MoeConfig& config, int num_experts, std::uint64_t seed,
                              const ProgressFn& progress, const std::vector<bool>& experts) {
  const std::int64_t h = config.hidden_size, i = config.intermediate_size;
  const DType dtype = config.weight_dtype;
  const bool subset = !experts.empty();
  auto make = [&](DType d, const Shape& shape) {
    return subset ? HostTensor::zeros(d, shape) : HostTensor(d, shape);
  };
  HostMoeWeights w;
  w.w13 = make(dtype, {num_experts, 2 * i, h});
  w.w2 = make(dtype, {num_experts, h, i});
  if (config.is_fp8()) {
    w.w13_scale = make(DType::kF32, {num_experts, 2 * i / kQuantGroup, h / kQuantGroup});
    w.w2_scale = make(DType::kF32, {num_experts, h / kQuantGroup, i / kQuantGroup});
  }
  check_arg(!subset || experts.size() == static_cast<std::size_t>(num_experts),
            "experts to generate", std::to_string(num_experts) + " flags", experts.size());
  std::int64_t wanted = 0;
  for (int e = 0; e < num_experts; ++e) wanted += subset ? experts[e] : 1;
  // An expert's w13 is 2/3 of its work, its w2 the rest.
  double done = 0.0;
  auto report = [&](double share) {
    return [&, share] {
      done += share;
      if (progress && wanted > 0) progress(done / static_cast<double>(wanted));
    };
  };
  fill_weight(w.w13, w.w13_scale, seed, kW13, kW13Scale, h, experts, report(2.0 / 3.0));
  fill_weight(w.w2, w.w2_scale, seed, kW2, kW2Scale, i, experts, report(1.0 / 3.0));
  // The experts left out are zeros, but with block scales of 1, not 0: every value stays valid
  // (a layer's finiteness check rejects scales <= 0), and the scales are a 16384th of the bytes.
  if (subset && config.is_fp8()) {
    for (HostTensor* scale : {&w.w13_scale, &w.w2_scale}) {
      const std::int64_t per_expert = scale->numel() / num_experts;
      for (int e = 0; e < num_experts; ++e) {
        if (experts[static_cast<std::size_t>(e)]) continue;
        std::fill_n(scale->data<float>() + e * per_expert, per_expert, 1.0f);
      }
    }
  }
  if (config.routing.mode == RoutingMode::kGroupedTopK) {
    w.correction_bias = random_correction_bias(config, seed);
  }
  return w;
}

HostTensor random_hidden_states(std::int64_t tokens, std::int64_t hidden, std::uint64_t seed) {
  HostTensor x(DType::kBF16, {tokens, hidden});
  bf16* p = x.data<bf16>();
  detail::parallel_for(x.numel(), 1 << 16, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      p[i] = float_to_bf16(standard_normal(seed, kHidden, static_cast<std::uint64_t>(i)));
    }
  });
  return x;
}

HostTensor random_router_logits(std::int64_t tokens, int experts, std::uint64_t seed, float scale) {
  HostTensor logits(DType::kF32, {tokens, experts});
  float* p = logits.data<float>();
  for (std::int64_t i = 0; i < logits.numel(); ++i) {
    p[i] = scale * standard_normal(seed, kLogits, static_cast<std::uint64_t>(i));
  }
  return logits;
}

void add_ep_routing_cases(const ExpertPlacement& placement, std::int64_t total, int k, int* ids) {
  const int ranks = placement.num_ranks(), local = placement.num_local_experts();
  for (int j = 0; j < k; ++j) ids[j] = placement.global_id(ranks - 1 - j / local, j % local);
  if (total > 1) ids[k + 1] = -1;
  for (int r = 0; r < ranks; r += k) {
    int* row = ids + (total - 1 - r / k) * k;
    for (int j = 0; j < k; ++j) row[j] = r + j < ranks ? placement.global_id(r + j, 0) : -1;
  }
}

void starve_rank(const ExpertPlacement& placement, int rank, std::int64_t slots, int* ids) {
  for (std::int64_t i = 0; i < slots; ++i) {
    if (ids[i] >= 0 && placement.owner(ids[i]) == rank) ids[i] = -1;
  }
}

}  // namespace moerun
