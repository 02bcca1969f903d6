// CUDA routing and dispatch vs the CPU oracle.
#include "cpu/routing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "cpu/dispatch.h"
#include "cuda/dispatch.h"
#include "cuda/routing.h"
#include "cuda_test_util.h"
#include "moerun/expert_map.h"

namespace moerun::test {
namespace {

struct RoutingCase {
  std::string name;
  RoutingConfig config;
  int experts;
  bool bias;
  float logit_step;  // > 0: logits rounded to multiples of it, so exact ties are common
};

void check_routing(const RoutingCase& c, std::int64_t tokens) {
  SCOPED_TRACE(c.name + ", T " + std::to_string(tokens));
  const std::uint64_t seed = fresh_seed();
  HostTensor logits = random_router_logits(tokens, c.experts, seed);
  if (c.logit_step > 0) {
    for (std::int64_t i = 0; i < logits.numel(); ++i) {
      float& v = logits.data<float>()[i];
      v = std::round(v / c.logit_step) * c.logit_step;
    }
  }
  HostTensor bias;
  if (c.bias) {
    bias = HostTensor(DType::kF32, {c.experts});
    for (int e = 0; e < c.experts; ++e) {
      bias.data<float>()[e] = 0.1f * standard_normal(seed, 99, static_cast<std::uint64_t>(e));
    }
  }
  const cpu::TopK expected = cpu::route(c.config, c.experts, logits.view(), bias.view());

  const DeviceTensor d_logits = DeviceTensor::from_host(logits.view());
  const DeviceTensor d_bias = DeviceTensor::from_host(bias.view());
  const int k = c.config.top_k;
  DeviceTensor ids(DType::kI32, {tokens, k}), weights(DType::kF32, {tokens, k});
  cuda::route(c.config, c.experts, d_logits.view(), d_bias.view(), ids.view(), weights.view(),
              nullptr);
  const HostTensor got_ids = ids.to_host(), got_weights = weights.to_host();
  int id_mismatches = 0, weight_mismatches = 0;
  for (std::int64_t i = 0; i < tokens * k; ++i) {
    if (got_ids.data<int>()[i] != expected.ids.data<int>()[i]) ++id_mismatches;
    if (!within_one_ulp(got_weights.data<float>()[i], expected.weights.data<float>()[i])) {
      ++weight_mismatches;
    }
  }
  // The compared values are the same floats on both sides (see cuda/routing.h), so ids, ties
  // included, must agree exactly.
  EXPECT_EQ(id_mismatches, 0);
  EXPECT_EQ(weight_mismatches, 0);
}

std::vector<RoutingCase> routing_cases() {
  RoutingConfig qwen{RoutingMode::kSoftmaxTopK, 8, true, 1, 1, 1.0f};
  RoutingConfig plain{RoutingMode::kSoftmaxTopK, 6, false, 1, 1, 1.0f};
  RoutingConfig mixtral{RoutingMode::kSoftmaxTopK, 2, true, 1, 1, 1.0f};
  RoutingConfig dsv3{RoutingMode::kGroupedTopK, 8, true, 8, 4, 2.5f};
  RoutingConfig dsv3_plain{RoutingMode::kGroupedTopK, 8, false, 8, 4, 1.0f};
  RoutingConfig many_groups{RoutingMode::kGroupedTopK, 4, true, 64, 5, 1.5f};
  return {
      {"softmax_renorm_E128_k8", qwen, 128, false, 0},
      {"softmax_E64_k6", plain, 64, false, 0},
      {"softmax_E8_k2", mixtral, 8, false, 0},
      {"softmax_ties_E128_k8", qwen, 128, false, 0.5f},
      {"grouped_dsv3_bias", dsv3, 256, true, 0},
      {"grouped_dsv3_nobias_norenorm", dsv3_plain, 256, false, 0},
      {"grouped_ties", dsv3, 256, false, 1.0f},
      {"grouped_64_groups_E1024", many_groups, 1024, true, 0},
  };
}

TEST(CudaRouting, MatchesOracle) {
  MOERUN_REQUIRE_GPU();
  for (const RoutingCase& c : routing_cases()) {
    for (std::int64_t tokens : {1, 127, 1000}) check_routing(c, tokens);
  }
}

TEST(CudaRouting, ZeroTokens) {
  MOERUN_REQUIRE_GPU();
  const RoutingCase c = routing_cases().front();
  DeviceTensor logits(DType::kF32, {0, c.experts}), ids(DType::kI32, {0, 8}),
      weights(DType::kF32, {0, 8});
  cuda::route(c.config, c.experts, logits.view(), {}, ids.view(), weights.view(), nullptr);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
}

TEST(CudaDispatch, MapsToLocalIncludingExpertZero) {
  MOERUN_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  constexpr int kExperts = 64, kTopK = 8;
  for (std::int64_t tokens : {1, 129, 3000}) {
    HostTensor ids = random_local_ids(tokens, kTopK, kExperts, 0.1, seed);  // global ids here
    ids.data<int>()[0] =
        16;  // rank 1's local expert 0 (contiguous), rank 0's local 4 (round robin)
    for (int ep_rank : {0, 1, 3}) {
      // Contiguous placement by arithmetic, and an arbitrary placement through a device map.
      for (bool round_robin : {false, true}) {
        SCOPED_TRACE("T " + std::to_string(tokens) + ", rank " + std::to_string(ep_rank) +
                     (round_robin ? ", round-robin map" : ", contiguous"));
        const std::vector<std::int32_t> map = round_robin
                                                  ? round_robin_expert_map(kExperts, 4, ep_rank)
                                                  : contiguous_expert_map(kExperts, 4, ep_rank);
        const HostTensor expected = cpu::map_to_local(ids.view(), map);
        const DeviceTensor d_ids = DeviceTensor::from_host(ids.view());
        const TensorView host_map(const_cast<std::int32_t*>(map.data()), DType::kI32, {kExperts});
        const DeviceTensor d_map = DeviceTensor::from_host(host_map);
        DeviceTensor local(DType::kI32, {tokens, kTopK});
        const cuda::LocalExperts experts =
            round_robin ? cuda::LocalExperts{kExperts, d_map.view(), 0, kExperts / 4}
                        : cuda::LocalExperts{kExperts, {}, ep_rank * kExperts / 4, kExperts / 4};
        cuda::map_to_local(d_ids.view(), experts, local.view(), nullptr);
        const HostTensor got = local.to_host();
        EXPECT_EQ(std::memcmp(got.view().data(), expected.view().data(), got.nbytes()), 0);
        if (ep_rank == 1 && !round_robin) {
          EXPECT_EQ(got.data<int>()[0], 0);
        }
        if (ep_rank == 0 && round_robin) {
          EXPECT_EQ(got.data<int>()[0], 4);
        }
      }
    }
  }
}

}  // namespace
}  // namespace moerun::test
