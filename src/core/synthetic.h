// Seeded synthetic inputs and weights: the CLI's default job, tests and benchmarks use them.
//
// Every value is a pure function of (seed, stream, index), so results do not depend on the
// thread count and a tensor can be regenerated piecewise.
#pragma once

#include <cstdint>
#include <vector>

#include "core/expert_placement.h"
#include "core/progress.h"
#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun {

struct HostMoeWeights {
  HostTensor w13, w13_scale, w2, w2_scale, correction_bias;
  MoeWeights view() const;
};

// Random weights for `num_experts` experts of `config`'s shapes and dtype. FP8 weights get random
// e4m3 codes (uniform over the 254 non-NaN codes) and random per-block scales; both dtypes give
// each product an O(1) magnitude. `experts` (num_experts flags; empty: all) picks the experts to
// generate: the others are zeros that take no memory (HostTensor::zeros; their FP8 block scales
// are 1, so that every value is valid), for jobs whose routing is known first and reaches a few
// experts of a large model. Values do not depend on which experts are generated, nor on the
// thread count.
HostMoeWeights random_weights(const MoeConfig& config, int num_experts, std::uint64_t seed,
                              const ProgressFn& progress = {},
                              const std::vector<bool>& experts = {});
// The correction bias random_weights() gives grouped routing: [E] f32, normal with std 0.1.
HostTensor random_correction_bias(const MoeConfig& config, std::uint64_t seed);

// Copies of the experts `experts` (global ids, in that order) of host weights of all E experts:
// one rank's weights under any placement. The correction bias is left out (routing reads it).
HostMoeWeights gather_experts(const MoeWeights& all, const std::vector<int>& experts);

// [T, H] bf16, standard normal values.
HostTensor random_hidden_states(std::int64_t tokens, std::int64_t hidden, std::uint64_t seed);
// [T, E] f32 router logits, normal with standard deviation `scale`.
HostTensor random_router_logits(std::int64_t tokens, int experts, std::uint64_t seed,
                                float scale = 2.0f);

// Uniform in [0, 1) and standard normal values for (seed, stream, index).
float uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t index);
float standard_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t index);

// Expert-parallel routing cases, for the tests and `moerun ep-check`. Rewrites ids [total, k]
// so that token 0's experts are all on the last ranks (all remote for a rank 0 that holds it), a
// slot of token 1 is skipped, and expert 0 of every rank is hit by the last tokens (rows rewritten
// whole, so a token's ids stay distinct). Needs k <= E.
void add_ep_routing_cases(const ExpertPlacement& placement, std::int64_t total, int k, int* ids);
// Drops every slot of ids [slots] routed to `rank`'s experts (-1): the rank receives no tokens.
void starve_rank(const ExpertPlacement& placement, int rank, std::int64_t slots, int* ids);

}  // namespace moerun
