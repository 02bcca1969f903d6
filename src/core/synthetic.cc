#include "core/synthetic.h"

#include <cmath>
#include <cstring>
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

void fill_weight(HostTensor& codes, HostTensor& scales, std::uint64_t seed, Stream code_stream,
                 Stream scale_stream, std::int64_t fan_in, const ProgressFn& progress,
                 double progress_base, double progress_span) {
  const std::int64_t n = codes.numel();
  const float target_std = 1.0f / std::sqrt(static_cast<float>(fan_in));
  const bool fp8 = codes.dtype() == DType::kFP8E4M3;
  // Uniform codes in [-448, 448] have standard deviation 448 / sqrt(3); the block scale maps that
  // onto the target, jittered by +-25% per block so that scales matter.
  const float base_scale = target_std * std::numbers::sqrt3_v<float> / kFp8E4M3Max;
  if (fp8) {
    float* s = scales.data<float>();
    for (std::int64_t i = 0; i < scales.numel(); ++i) {
      s[i] = base_scale *
             (0.75f + 0.5f * uniform01(seed, scale_stream, static_cast<std::uint64_t>(i)));
    }
  }
  constexpr std::int64_t kChunk = 1 << 22;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::int64_t done = 0;
  for (std::int64_t c0 = 0; c0 < chunks; c0 += 16) {
    const std::int64_t c1 = std::min(chunks, c0 + 16);
    detail::parallel_for((c1 - c0) * kChunk, kChunk, [&](std::int64_t begin, std::int64_t end) {
      const std::int64_t lo = c0 * kChunk + begin, hi = std::min(n, c0 * kChunk + end);
      for (std::int64_t i = lo; i < hi; ++i) {
        const float u = 2.0f * uniform01(seed, code_stream, static_cast<std::uint64_t>(i)) - 1.0f;
        if (fp8) {
          codes.data<fp8e4m3>()[i] = float_to_fp8e4m3(u * kFp8E4M3Max);
        } else {
          codes.data<bf16>()[i] = float_to_bf16(u * target_std * std::numbers::sqrt3_v<float>);
        }
      }
    });
    done = std::min(n, c1 * kChunk);
    if (progress)
      progress(progress_base + progress_span * static_cast<double>(done) / static_cast<double>(n));
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
                              const ProgressFn& progress) {
  const std::int64_t h = config.hidden_size, i = config.intermediate_size;
  const DType dtype = config.weight_dtype;
  HostMoeWeights w;
  w.w13 = HostTensor(dtype, {num_experts, 2 * i, h});
  w.w2 = HostTensor(dtype, {num_experts, h, i});
  if (config.is_fp8()) {
    w.w13_scale = HostTensor(DType::kF32, {num_experts, 2 * i / kQuantGroup, h / kQuantGroup});
    w.w2_scale = HostTensor(DType::kF32, {num_experts, h / kQuantGroup, i / kQuantGroup});
  }
  fill_weight(w.w13, w.w13_scale, seed, kW13, kW13Scale, h, progress, 0.0, 2.0 / 3.0);
  fill_weight(w.w2, w.w2_scale, seed, kW2, kW2Scale, i, progress, 2.0 / 3.0, 1.0 / 3.0);
  if (config.routing.mode == RoutingMode::kGroupedTopK) {
    w.correction_bias = HostTensor(DType::kF32, {config.num_experts});
    for (int e = 0; e < config.num_experts; ++e) {
      w.correction_bias.data<float>()[e] =
          0.1f * standard_normal(seed, kBias, static_cast<std::uint64_t>(e));
    }
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
