// Routing kernel: one warp per token, the token's E values in shared memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/routing.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxWarpsPerBlock = 8;

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

// Whether (va, a) ranks before (vb, b): larger value first, lower index on ties.
__device__ __forceinline__ bool ranks_before(float va, int a, float vb, int b) {
  return va > vb || (va == vb && a < b);
}

// Reduces each lane's candidate (best_v, best_i; best_i < 0 = none) to the warp's best, in every
// lane.
__device__ __forceinline__ void warp_reduce_best(float& best_v, int& best_i) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset >= 1; offset /= 2) {
    const float other_v = __shfl_xor_sync(0xffffffffu, best_v, offset);
    const int other_i = __shfl_xor_sync(0xffffffffu, best_i, offset);
    if (other_i >= 0 && (best_i < 0 || ranks_before(other_v, other_i, best_v, best_i))) {
      best_v = other_v;
      best_i = other_i;
    }
  }
}

// The index of the best value (larger first, lower index on ties) over values[0, count), reduced
// over the warp; every lane gets it.
__device__ __forceinline__ int warp_argmax(const float* values, int count, int lane) {
  float best_v = -INFINITY;
  int best_i = -1;
  for (int i = lane; i < count; i += kWarpSize) {
    const float v = values[i];
    if (best_i < 0 || ranks_before(v, i, best_v, best_i)) {
      best_v = v;
      best_i = i;
    }
  }
  warp_reduce_best(best_v, best_i);
  return best_i;
}

// Launch: blocks of `warps` warps, one token per warp, grid-stride over tokens.
// Shared memory per warp: choice[E] f32, score[E] f32, weight[E] f64 (softmax exps).
// Chosen entries are knocked out by setting their choice to -inf; logits and biased scores are
// finite, so a knocked-out entry never wins again while a finite candidate remains, and
// config.validate() guarantees k finite candidates.
__global__ void route_kernel(RoutingParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  const int e_count = p.experts;
  double* exps = reinterpret_cast<double*>(smem) + static_cast<size_t>(warp) * e_count;
  float* choice = reinterpret_cast<float*>(reinterpret_cast<double*>(smem) +
                                           static_cast<size_t>(warps) * e_count) +
                  static_cast<size_t>(warp) * 2 * e_count;
  float* score = choice + e_count;

  for (int t = blockIdx.x * warps + warp; t < p.tokens; t += gridDim.x * warps) {
    const float* row = p.logits + static_cast<size_t>(t) * e_count;
    int* ids = p.ids + static_cast<size_t>(t) * p.top_k;
    float* weights = p.weights + static_cast<size_t>(t) * p.top_k;
    if (!p.grouped) {
      for (int e = lane; e < e_count; e += kWarpSize) choice[e] = row[e];
      __syncwarp();
      // Softmax is monotone: choosing on logits equals choosing on probabilities.
      const double max_logit = choice[warp_argmax(choice, e_count, lane)];
      for (int e = lane; e < e_count; e += kWarpSize) {
        exps[e] = exp(static_cast<double>(choice[e]) - max_logit);
      }
      __syncwarp();
      double denominator = 0.0;
      if (!p.renormalize) {
        // The oracle's order: all experts by index, one running double sum.
        if (lane == 0) {
          for (int e = 0; e < e_count; ++e) denominator = __dadd_rn(denominator, exps[e]);
        }
      }
      for (int j = 0; j < p.top_k; ++j) {
        const int best = warp_argmax(choice, e_count, lane);
        __syncwarp();
        if (lane == 0) {
          ids[j] = best;
          choice[best] = -INFINITY;
          if (p.renormalize) denominator = __dadd_rn(denominator, exps[best]);
        }
        __syncwarp();
      }
      if (lane == 0) {
        for (int j = 0; j < p.top_k; ++j) {
          weights[j] = static_cast<float>(__ddiv_rn(exps[ids[j]], denominator));
        }
      }
      __syncwarp();
      continue;
    }

    // DeepSeek-V3 grouped top-k.
    for (int e = lane; e < e_count; e += kWarpSize) {
      // The oracle's sigmoid: double precision, rounded to float.
      const float s =
          static_cast<float>(__ddiv_rn(1.0, __dadd_rn(1.0, exp(-static_cast<double>(row[e])))));
      score[e] = s;
      choice[e] = __fadd_rn(s, p.bias != nullptr ? p.bias[e] : 0.0f);
    }
    __syncwarp();
    const int group_size = e_count / p.num_groups;
    // Group score = sum of the group's top-2 biased scores; parked in exps[] (as floats in
    // doubles) to keep shared memory to one layout.
    for (int g = lane; g < p.num_groups; g += kWarpSize) {
      int b0 = -1, b1 = -1;
      for (int e = g * group_size; e < (g + 1) * group_size; ++e) {
        if (b0 < 0 || ranks_before(choice[e], e, choice[b0], b0)) {
          b1 = b0;
          b0 = e;
        } else if (b1 < 0 || ranks_before(choice[e], e, choice[b1], b1)) {
          b1 = e;
        }
      }
      exps[g] = static_cast<double>(__fadd_rn(choice[b0], choice[b1]));
    }
    __syncwarp();
    // Keep the topk_groups best groups (ties: lower group id), marking each kept one with -inf in
    // exps[]; then knock out the experts of the groups not kept.
    for (int j = 0; j < p.topk_groups; ++j) {
      float best_v = -INFINITY;
      int best_g = -1;
      for (int g = lane; g < p.num_groups; g += kWarpSize) {
        const double d = exps[g];
        if (d == -INFINITY) continue;  // already kept
        const float v = static_cast<float>(d);
        if (best_g < 0 || ranks_before(v, g, best_v, best_g)) {
          best_v = v;
          best_g = g;
        }
      }
      warp_reduce_best(best_v, best_g);
      __syncwarp();
      if (lane == 0) exps[best_g] = -INFINITY;  // mark kept
      __syncwarp();
    }
    for (int e = lane; e < e_count; e += kWarpSize) {
      if (exps[e / group_size] != -INFINITY) choice[e] = -INFINITY;
    }
    __syncwarp();
    double denominator = 1.0;
    if (p.renormalize) denominator = 0.0;
    for (int j = 0; j < p.top_k; ++j) {
      const int best = warp_argmax(choice, e_count, lane);
      __syncwarp();
      if (lane == 0) {
        ids[j] = best;
        choice[best] = -INFINITY;
        if (p.renormalize) denominator = __dadd_rn(denominator, static_cast<double>(score[best]));
      }
      __syncwarp();
    }
    if (lane == 0) {
      for (int j = 0; j < p.top_k; ++j) {
        weights[j] =
            static_cast<float>(__dmul_rn(__ddiv_rn(static_cast<double>(score[ids[j]]), denominator),
                                         static_cast<double>(p.routed_scaling_factor)));
      }
    }
    __syncwarp();
  }
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
  check_arg(k >= 1 && k <= num_experts, "top_k", "1 <= top_k <= num_experts", k);
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

  // Per warp: E doubles + 2E floats.
  const size_t per_warp = static_cast<size_t>(num_experts) * (sizeof(double) + 2 * sizeof(float));
  const int warps = static_cast<int>(
      std::clamp<size_t>(48 * 1024 / per_warp, 1, static_cast<size_t>(kMaxWarpsPerBlock)));
  const size_t smem = per_warp * static_cast<size_t>(warps);
  const std::int64_t blocks = std::min<std::int64_t>(ceil_div<std::int64_t>(tokens, warps), 65535);

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
  p.num_groups = config.num_groups;
  p.topk_groups = config.topk_groups;
  p.routed_scaling_factor = config.routed_scaling_factor;
  route_kernel<<<static_cast<unsigned>(blocks), warps * kWarpSize, smem, stream>>>(p);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda
