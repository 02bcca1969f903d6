// Routing kernel: one warp per token, the token's E values in registers (E / 32 per lane).
//
// Every choice is a sequence of warp-wide "best remaining candidate" rounds. Candidate c of a
// lane sits in slot c / 32 of lane c % 32 (so a row loads coalesced) and is ranked by an
// order-preserving 32-bit key of its float value; the round's winner is the largest key, ties to
// the lower index: __reduce_max_sync over the lanes' best keys, then the lowest slot among the
// lanes holding that key, then the lowest such lane (a ballot). The winner's lane takes that
// candidate out. No shared memory except the grouped mode's per-group top-2 scan.
//
// Exactness: the compared values are the oracle's floats (logits; sigmoid_f32 scores plus bias,
// core/portable_math.h), and ties break as the oracle's (lower expert, lower group), so the ids
// are the oracle's. Weights are computed in double in the oracle's order and rounded once.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/portable_math.h"
#include "cuda/cuda_check.h"
#include "cuda/per_device.h"
#include "cuda/routing.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarpSize;

struct RoutingParams {
  const float* logits;  // [T, E]
  const float* bias;    // [E] or null
  int* ids;             // [T, k]
  float* weights;       // [T, k]
  int tokens;
  int experts;
  int top_k;
  bool grouped;
  bool renormalize;
  int num_groups;
  int topk_groups;
  float routed_scaling_factor;
};

// Order-preserving key of a finite float (larger float, larger key); -0 and +0 share a key, as
// they compare equal. Key 0 is below every float: it marks a slot that is out or empty.
__device__ __forceinline__ unsigned order_key(float v) {
  const unsigned bits = __float_as_uint(__fadd_rn(v, 0.0f));  // -0 + 0 = +0
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

__device__ __forceinline__ float key_value(unsigned key) {
  return __uint_as_float((key & 0x80000000u) != 0 ? key & 0x7fffffffu : ~key);
}

// A lane's kSlots candidates (slot s = candidate s * 32 + lane) and its best remaining one.
template <int kSlots>
struct Candidates {
  unsigned key[kSlots];
  unsigned best_key;
  int best_slot;

  __device__ __forceinline__ void find_best() {
    best_key = key[0];
    best_slot = 0;
#pragma unroll
    for (int s = 1; s < kSlots; ++s) {
      if (key[s] > best_key) {  // strict: the lower slot keeps a tie
        best_key = key[s];
        best_slot = s;
      }
    }
  }

  // One round: the warp's best remaining candidate (every lane gets it), taken out. Returns its
  // index (slot * 32 + lane) and key; the winner lane also reports its slot in `slot`.
  __device__ __forceinline__ int take_best(int lane, unsigned& key_out, int& slot) {
    const unsigned best = __reduce_max_sync(kFullMask, best_key);
    const bool holds = best_key == best;
    const int low_slot = static_cast<int>(
        __reduce_min_sync(kFullMask, holds ? static_cast<unsigned>(best_slot) : ~0u));
    const unsigned lanes = __ballot_sync(kFullMask, holds && best_slot == low_slot);
    const int winner = __ffs(static_cast<int>(lanes)) - 1;
    slot = low_slot;
    if (lane == winner) {
#pragma unroll
      for (int s = 0; s < kSlots; ++s) {
        if (s == low_slot) key[s] = 0;
      }
      find_best();
    }
    key_out = best;
    return low_slot * kWarpSize + winner;
  }
};

// The value of slot `slot` from the lane-local array (slot is warp-uniform; unrolled, so the
// array stays in registers).
template <int kSlots, class T>
__device__ __forceinline__ T slot_value(const T (&values)[kSlots], int slot) {
  T v = values[0];
#pragma unroll
  for (int s = 1; s < kSlots; ++s) {
    if (s == slot) v = values[s];
  }
  return v;
}

// Sum over lanes j < count of `value`, in lane order, one running double (the oracle's order
// over its chosen list). Every lane gets it.
__device__ __forceinline__ double ordered_sum(double value, int count) {
  double sum = 0.0;
  for (int j = 0; j < count; ++j) sum = __dadd_rn(sum, __shfl_sync(kFullMask, value, j));
  return sum;
}

template <int kSlots>
__device__ void route_softmax(const RoutingParams& p, const float* row, int lane, int* ids,
                              float* weights) {
  Candidates<kSlots> c;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int e = s * kWarpSize + lane;
    c.key[s] = e < p.experts ? order_key(row[e]) : 0u;
  }
  c.find_best();
  // Softmax is monotone: choosing on logits equals choosing on probabilities. Lane j keeps round
  // j's choice.
  int my_id = -1;
  float my_logit = 0.0f, max_logit = 0.0f;
  for (int j = 0; j < p.top_k; ++j) {
    unsigned key;
    int slot;
    const int id = c.take_best(lane, key, slot);
    if (j == 0) max_logit = key_value(key);
    if (lane == j) {
      my_id = id;
      my_logit = key_value(key);
    }
  }
  const double max_d = max_logit;
  const double my_exp = lane < p.top_k ? exp(static_cast<double>(my_logit) - max_d) : 0.0;
  double denominator;
  if (p.renormalize) {
    denominator = ordered_sum(my_exp, p.top_k);
  } else {
    // The oracle's order: every expert by index, one running double sum (slow, and rare: no
    // preset model routes without renormalizing).
    denominator = 0.0;
    for (int s = 0; s < kSlots; ++s) {
      const int e = s * kWarpSize + lane;
      const double x = e < p.experts ? exp(static_cast<double>(row[e]) - max_d) : 0.0;
      const int lanes = min(kWarpSize, p.experts - s * kWarpSize);
      for (int l = 0; l < lanes; ++l)
        denominator = __dadd_rn(denominator, __shfl_sync(kFullMask, x, l));
    }
  }
  if (lane < p.top_k) {
    ids[lane] = my_id;
    weights[lane] = static_cast<float>(__ddiv_rn(my_exp, denominator));
  }
}

// DeepSeek-V3 grouped top-k. `choice` is the warp's shared scratch of E floats, `kept` of
// num_groups ints.
template <int kSlots>
__device__ void route_grouped(const RoutingParams& p, const float* row, int lane, float* choice,
                              int* kept, int* ids, float* weights) {
  float score[kSlots];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int e = s * kWarpSize + lane;
    score[s] = 0.0f;
    if (e < p.experts) {
      // The bias steers the choice only; the weights come from the unbiased scores.
      score[s] = detail::sigmoid_f32(row[e]);
      choice[e] = __fadd_rn(score[s], p.bias != nullptr ? __ldg(p.bias + e) : 0.0f);
    }
  }
  __syncwarp();
  // Group score = the sum of the group's two largest biased scores (ties do not change it). Lane
  // g scans group g from a rotated start, so that lanes read different banks.
  const int group_size = p.experts / p.num_groups;
  constexpr int kGroupSlots = kSlots;  // num_groups <= E / 2 < 32 * kSlots
  Candidates<kGroupSlots> groups;
#pragma unroll
  for (int s = 0; s < kGroupSlots; ++s) {
    const int g = s * kWarpSize + lane;
    groups.key[s] = 0u;
    if (g < p.num_groups) {
      const float* members = choice + g * group_size;
      float b0 = -INFINITY, b1 = -INFINITY;
      int at = lane % group_size;
      for (int j = 0; j < group_size; ++j) {
        const float v = members[at];
        at = at + 1 == group_size ? 0 : at + 1;
        if (v > b0) {
          b1 = b0;
          b0 = v;
        } else if (v > b1) {
          b1 = v;
        }
      }
      groups.key[s] = order_key(__fadd_rn(b0, b1));
      kept[g] = 0;
    }
  }
  groups.find_best();
  __syncwarp();
  for (int j = 0; j < p.topk_groups; ++j) {
    unsigned key;
    int slot;
    const int g = groups.take_best(lane, key, slot);
    if (lane == 0) kept[g] = 1;
  }
  __syncwarp();
  Candidates<kSlots> c;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int e = s * kWarpSize + lane;
    c.key[s] = e < p.experts && kept[e / group_size] != 0 ? order_key(choice[e]) : 0u;
  }
  c.find_best();
  __syncwarp();  // `choice` and `kept` may be rewritten by the warp's next token
  int my_id = -1;
  float my_score = 0.0f;
  for (int j = 0; j < p.top_k; ++j) {
    unsigned key;
    int slot;
    const int id = c.take_best(lane, key, slot);
    // The chosen expert's unbiased score, from the lane that held it.
    const float s = __shfl_sync(kFullMask, slot_value<kSlots>(score, slot), id % kWarpSize);
    if (lane == j) {
      my_id = id;
      my_score = s;
    }
  }
  const double denominator =
      p.renormalize ? ordered_sum(lane < p.top_k ? static_cast<double>(my_score) : 0.0, p.top_k)
                    : 1.0;
  if (lane < p.top_k) {
    ids[lane] = my_id;
    weights[lane] =
        static_cast<float>(__dmul_rn(__ddiv_rn(static_cast<double>(my_score), denominator),
                                     static_cast<double>(p.routed_scaling_factor)));
  }
}

// Launch: blocks of kWarps warps, one token per warp, grid-stride over tokens. Dynamic shared
// memory (grouped mode): per warp E floats of biased scores and num_groups ints of kept flags.
template <int kSlots>
__global__ void __launch_bounds__(kThreads) route_kernel(RoutingParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  float* choice =
      reinterpret_cast<float*>(smem) + static_cast<size_t>(warp) * (p.experts + p.num_groups);
  int* kept = reinterpret_cast<int*>(choice + p.experts);
  for (int t = blockIdx.x * kWarps + warp; t < p.tokens; t += gridDim.x * kWarps) {
    const float* row = p.logits + static_cast<size_t>(t) * p.experts;
    int* ids = p.ids + static_cast<size_t>(t) * p.top_k;
    float* weights = p.weights + static_cast<size_t>(t) * p.top_k;
    if (p.grouped) {
      route_grouped<kSlots>(p, row, lane, choice, kept, ids, weights);
    } else {
      route_softmax<kSlots>(p, row, lane, ids, weights);
    }
  }
}

// Shared memory of the grouped mode for the largest E of a slot count: per warp E floats of
// biased scores and num_groups (<= E / 2) ints of kept flags fit in 8 bytes per expert.
template <int kSlots>
constexpr size_t grouped_smem_bytes() {
  return static_cast<size_t>(kWarps) * kSlots * kWarpSize * 8;
}

// Blocks of route_kernel<kSlots> resident on the current device at once, counted with the grouped
// mode's shared memory so that the cached value holds for both modes (cached per slot count and
// device, cuda/per_device.h).
template <int kSlots>
int resident_blocks() {
  static PerDevice<int> cache;
  return cache.get([](int device) {
    int sms = 0, per_sm = 0;
    MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    MOERUN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, route_kernel<kSlots>, kThreads, grouped_smem_bytes<kSlots>()));
    return sms * std::max(per_sm, 1);
  });
}

template <int kSlots>
void launch(const RoutingParams& p, cudaStream_t stream) {
  const size_t smem = p.grouped ? grouped_smem_bytes<kSlots>() : 0;
  const std::int64_t blocks =
      std::min<std::int64_t>(ceil_div<std::int64_t>(p.tokens, kWarps), resident_blocks<kSlots>());
  route_kernel<kSlots><<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void route(const RoutingConfig& config, int num_experts, const TensorView& router_logits,
           const TensorView& correction_bias, const TensorView& topk_ids,
           const TensorView& topk_weights, cudaStream_t stream) {
  check_arg(router_logits.ndim() == 2, "router_logits rank", "2 ([T, E])", router_logits.ndim());
  const std::int64_t tokens = router_logits.size(0);
  const int k = config.top_k;
  check_arg(num_experts >= 1 && num_experts <= kRoutingMaxExperts, "num_experts",
            "1..." + std::to_string(kRoutingMaxExperts) + " for CUDA routing", num_experts);
  check_arg(
      k >= 1 && k <= std::min(num_experts, kRoutingMaxTopK), "top_k",
      "1 <= top_k <= min(num_experts, " + std::to_string(kRoutingMaxTopK) + ") for CUDA routing",
      k);
  check_tensor(router_logits, "router_logits", DType::kF32, {tokens, num_experts},
               DeviceType::kCuda);
  check_tensor(topk_ids, "topk_ids", DType::kI32, {tokens, k}, DeviceType::kCuda);
  check_tensor(topk_weights, "topk_weights", DType::kF32, {tokens, k}, DeviceType::kCuda);
  const bool grouped = config.mode == RoutingMode::kGroupedTopK;
  if (correction_bias.defined()) {
    check_arg(grouped, "correction_bias", "none for softmax routing",
              correction_bias.shape_string());
    check_tensor(correction_bias, "correction_bias", DType::kF32, {num_experts}, DeviceType::kCuda);
  }
  if (grouped) {
    check_arg(config.num_groups >= 1 && num_experts % config.num_groups == 0 &&
                  num_experts / config.num_groups >= 2,
              "num_groups", "a divisor of num_experts with >= 2 experts per group",
              config.num_groups);
    check_arg(config.topk_groups >= 1 && config.topk_groups <= config.num_groups, "topk_groups",
              "1 <= topk_groups <= num_groups", config.topk_groups);
    check_arg(k <= config.topk_groups * (num_experts / config.num_groups), "top_k",
              "<= experts in the kept groups", k);
  }
  check_arg(tokens <= 0x7fffffff, "tokens", "< 2^31", tokens);
  if (tokens == 0) return;

  RoutingParams p{};
  p.logits = router_logits.data_as<const float>();
  p.bias = correction_bias.defined() ? correction_bias.data_as<const float>() : nullptr;
  p.ids = topk_ids.data_as<int>();
  p.weights = topk_weights.data_as<float>();
  p.tokens = static_cast<int>(tokens);
  p.experts = num_experts;
  p.top_k = k;
  p.grouped = grouped;
  p.renormalize = config.renormalize;
  p.topk_groups = config.topk_groups;
  p.routed_scaling_factor = config.routed_scaling_factor;
  p.num_groups = grouped ? config.num_groups : 0;
  // Slots per lane: the next power of two >= E / 32.
  const int slots = static_cast<int>(ceil_div(num_experts, kWarpSize));
  if (slots <= 1) {
    launch<1>(p, stream);
  } else if (slots <= 2) {
    launch<2>(p, stream);
  } else if (slots <= 4) {
    launch<4>(p, stream);
  } else if (slots <= 8) {
    launch<8>(p, stream);
  } else if (slots <= 16) {
    launch<16>(p, stream);
  } else {
    launch<32>(p, stream);
  }
}

}  // namespace moerun::cuda
