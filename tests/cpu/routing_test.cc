#include "cpu/routing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "core/portable_math.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun::cpu {
namespace {

using test::make_f32;

RoutingConfig softmax(int k, bool renormalize) {
  return {RoutingMode::kSoftmaxTopK, k, renormalize, 1, 1, 1.0f};
}

TEST(Routing, SoftmaxTopKHandChecked) {
  const HostTensor logits = make_f32(1, 4, {1.0f, 2.0f, 3.0f, 0.0f});
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(0.0);
  const TopK plain = route(softmax(2, false), 4, logits.view());
  EXPECT_EQ(plain.ids.data<int>()[0], 2);
  EXPECT_EQ(plain.ids.data<int>()[1], 1);
  EXPECT_FLOAT_EQ(plain.weights.data<float>()[0], static_cast<float>(std::exp(3.0) / z));
  EXPECT_FLOAT_EQ(plain.weights.data<float>()[1], static_cast<float>(std::exp(2.0) / z));
  const TopK renorm = route(softmax(2, true), 4, logits.view());
  const double pair = std::exp(3.0) + std::exp(2.0);
  EXPECT_FLOAT_EQ(renorm.weights.data<float>()[0], static_cast<float>(std::exp(3.0) / pair));
  EXPECT_FLOAT_EQ(renorm.weights.data<float>()[1], static_cast<float>(std::exp(2.0) / pair));
}

TEST(Routing, TiesGoToTheLowerExpertId) {
  const HostTensor logits = make_f32(1, 5, {0.5f, 1.0f, 0.5f, 1.0f, 1.0f});
  const TopK r = route(softmax(3, true), 5, logits.view());
  EXPECT_EQ(r.ids.data<int>()[0], 1);
  EXPECT_EQ(r.ids.data<int>()[1], 3);
  EXPECT_EQ(r.ids.data<int>()[2], 4);
}

TEST(Routing, GroupedTopKHandChecked) {
  // 8 experts in 4 groups of 2; keep 2 groups; k = 2. Sigmoid(0) = 0.5.
  // Group scores (biased): g0 = {0.5+0.3, 0.5} -> 1.3; g1 = {s(2), s(-2)}; g2 = {s(1), s(1)};
  // g3 = {s(-3), s(-3)}. s(2)+s(-2) = 1.0, 2 s(1) = 1.462: keep g0 and g2.
  // Inside them the biased choice picks expert 0 (0.8) and expert 4 or 5 (tie at s(1): 4).
  // Weights are the unbiased scores, renormalized, times 2.5.
  RoutingConfig config{RoutingMode::kGroupedTopK, 2, true, 4, 2, 2.5f};
  const HostTensor logits = make_f32(1, 8, {0, 0, 2, -2, 1, 1, -3, -3});
  HostTensor bias = make_f32(1, 8, {0.3f, 0, 0, 0, 0, 0, 0, 0});
  const TensorView bias_view(bias.view().data(), DType::kF32, {8});
  const TopK r = route(config, 8, logits.view(), bias_view);
  EXPECT_EQ(r.ids.data<int>()[0], 0);
  EXPECT_EQ(r.ids.data<int>()[1], 4);
  const double s0 = 0.5, s4 = 1.0 / (1.0 + std::exp(-1.0));
  EXPECT_FLOAT_EQ(r.weights.data<float>()[0], static_cast<float>(s0 / (s0 + s4) * 2.5));
  EXPECT_FLOAT_EQ(r.weights.data<float>()[1], static_cast<float>(s4 / (s0 + s4) * 2.5));
  // Expert 2 has the highest score, s(2), but its group's top-2 sum (1.0) loses.
}

TEST(Routing, GroupScoreIsTheSumOfTheTopTwo) {
  // Group 1 has the single best expert but a weak second; group 0's top-2 sum is higher.
  RoutingConfig config{RoutingMode::kGroupedTopK, 1, true, 2, 1, 1.0f};
  const HostTensor logits = make_f32(1, 6, {1.0f, 1.0f, -5.0f, 3.0f, -5.0f, -5.0f});
  const TopK r = route(config, 6, logits.view());
  EXPECT_EQ(r.ids.data<int>()[0], 0);  // group 0 kept; expert 3 (group 1) is out
  EXPECT_FLOAT_EQ(r.weights.data<float>()[0], 1.0f);
}

TEST(Routing, RandomSoftmaxProperties) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int experts = 64, k = 6;
  const HostTensor logits = test::random_f32(300, experts, seed, -4.0f, 4.0f);
  const TopK r = route(softmax(k, true), experts, logits.view());
  for (int t = 0; t < 300; ++t) {
    const float* row = logits.data<float>() + t * experts;
    std::set<int> chosen;
    double sum = 0;
    for (int j = 0; j < k; ++j) {
      const int id = r.ids.data<int>()[t * k + j];
      ASSERT_TRUE(id >= 0 && id < experts);
      chosen.insert(id);
      sum += r.weights.data<float>()[t * k + j];
      if (j > 0) {
        EXPECT_GE(r.weights.data<float>()[t * k + j - 1], r.weights.data<float>()[t * k + j]);
      }
    }
    ASSERT_EQ(chosen.size(), static_cast<std::size_t>(k));
    EXPECT_NEAR(sum, 1.0, 1e-6);
    float min_chosen = 1e30f;
    for (int id : chosen) min_chosen = std::min(min_chosen, row[id]);
    for (int e = 0; e < experts; ++e) {
      if (!chosen.count(e)) {
        EXPECT_LE(row[e], min_chosen) << "expert " << e << " token " << t;
      }
    }
  }
}

TEST(Routing, RandomGroupedProperties) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int experts = 64, k = 8, groups = 8, topk_groups = 3, size = experts / groups;
  RoutingConfig config{RoutingMode::kGroupedTopK, k, true, groups, topk_groups, 2.5f};
  const HostTensor logits = test::random_f32(200, experts, seed, -3.0f, 3.0f);
  const HostTensor bias2d = test::random_f32(1, experts, seed + 1, -0.2f, 0.2f);
  const TensorView bias(bias2d.view().data(), DType::kF32, {experts});
  const TopK r = route(config, experts, logits.view(), bias);
  for (int t = 0; t < 200; ++t) {
    std::vector<float> choice(experts);
    for (int e = 0; e < experts; ++e) {
      const float l = logits.data<float>()[t * experts + e];
      choice[e] = detail::sigmoid_f32(l) + bias2d.data<float>()[e];
    }
    std::set<int> chosen, chosen_groups;
    double sum = 0;
    for (int j = 0; j < k; ++j) {
      const int id = r.ids.data<int>()[t * k + j];
      chosen.insert(id);
      chosen_groups.insert(id / size);
      sum += r.weights.data<float>()[t * k + j];
    }
    ASSERT_EQ(chosen.size(), static_cast<std::size_t>(k));
    EXPECT_LE(chosen_groups.size(), static_cast<std::size_t>(topk_groups));
    EXPECT_NEAR(sum, 2.5, 1e-5);
    // Inside the groups that were used, no unchosen expert beats a chosen one.
    float min_chosen = 1e30f;
    for (int id : chosen) min_chosen = std::min(min_chosen, choice[id]);
    for (int e = 0; e < experts; ++e) {
      if (chosen_groups.count(e / size) && !chosen.count(e)) {
        EXPECT_LE(choice[e], min_chosen);
      }
    }
  }
}

TEST(Routing, RejectsNaNLogitsNamingTheElement) {
  HostTensor logits =
      make_f32(2, 4, {0, 1, 2, 3, 0, 1, std::numeric_limits<float>::quiet_NaN(), 3});
  try {
    route(softmax(2, true), 4, logits.view());
    FAIL() << "NaN accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "moerun: invalid router_logits[1, 2]: expected a finite value, got nan");
  }
}

TEST(Routing, RejectsLogitsOfTheWrongWidth) {
  const HostTensor logits = make_f32(2, 3, {0, 1, 2, 3, 4, 5});
  EXPECT_THROW(route(softmax(2, true), 4, logits.view()), InvalidArgument);
}

TEST(Routing, ZeroTokens) {
  const HostTensor logits(DType::kF32, {0, 8});
  const TopK r = route(softmax(2, true), 8, logits.view());
  EXPECT_EQ(r.ids.numel(), 0);
}

}  // namespace
}  // namespace moerun::cpu
