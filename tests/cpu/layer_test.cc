#include "cpu/layer.h"

#include <gtest/gtest.h>

#include "core/metrics.h"
#include "cpu/dense_reference.h"
#include "cpu/layer_fixture.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "test_util.h"
#include "tolerances.h"

namespace moerun::cpu {
namespace {

using test::LayerCase;
using test::scaled_config;

HostTensor run_layer(const LayerCase& c, Layout layout, bool overlap = false) {
  HostTensor out(DType::kBF16, {c.hidden.size(0), c.config.hidden_size});
  test::poison(out);
  moe_forward(c.config, c.weights.view(), c.hidden.view(), c.routing.ids.view(),
              c.routing.weights.view(), out.view(), {layout, 128, 0, overlap});
  return out;
}

class LayerVsDense
    : public ::testing::TestWithParam<std::tuple<std::string, Layout, std::int64_t>> {};

TEST_P(LayerVsDense, WithinTolerance) {
  const auto& [family, layout, tokens] = GetParam();
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const LayerCase c(scaled_config(family), tokens, seed);
  const HostTensor out = run_layer(c, layout);
  const std::vector<double> ref = dense_reference(c.config, c.weights.view(), c.hidden.view(),
                                                  c.routing.ids.view(), c.routing.weights.view());
  const double tolerance = c.config.is_fp8() ? test::kLayerFp8 : test::kLayerBf16;
  // relative_error is +inf on any NaN, so a row left unwritten (poisoned) fails here.
  EXPECT_LE(relative_error(out.view(), ref), tolerance);
}

INSTANTIATE_TEST_SUITE_P(Families, LayerVsDense,
                         ::testing::Combine(::testing::Values("deepseek-v3", "qwen3-30b-a3b",
                                                              "mixtral-8x7b"),
                                            ::testing::Values(Layout::kMasked, Layout::kContiguous),
                                            ::testing::Values(1, 127, 128, 129)),
                         [](const auto& param_info) {
                           std::string name = std::get<0>(param_info.param);
                           for (char& ch : name)
                             ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return name + "_" +
                                  std::string(layout_name(std::get<1>(param_info.param))) + "_T" +
                                  std::to_string(std::get<2>(param_info.param));
                         });

TEST(Layer, MaskedAndContiguousAreBitwiseEqual) {
  for (const char* family : {"deepseek-v3", "qwen3-30b-a3b"}) {
    const LayerCase c(scaled_config(family), 77, test::fresh_seed());
    EXPECT_TRUE(
        test::bitwise_equal(run_layer(c, Layout::kMasked), run_layer(c, Layout::kContiguous)))
        << family;
  }
}

TEST(Layer, DeterministicRunToRun) {
  const LayerCase c(scaled_config("deepseek-v3"), 64, test::fresh_seed());
  EXPECT_TRUE(
      test::bitwise_equal(run_layer(c, Layout::kContiguous), run_layer(c, Layout::kContiguous)));
}

TEST(Layer, ZeroTokens) {
  const LayerCase c(scaled_config("qwen3-30b-a3b"), 0, 1);
  EXPECT_EQ(run_layer(c, Layout::kMasked).numel(), 0);
  EXPECT_EQ(run_layer(c, Layout::kContiguous).numel(), 0);
}

TEST(Layer, AllTokensOnOneExpert) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  MoeConfig config = scaled_config("mixtral-8x7b");
  config.routing.top_k = 1;
  LayerCase c(config, 200, seed);
  for (int expert : {0, 3}) {
    for (std::int64_t t = 0; t < 200; ++t) c.routing.ids.data<int>()[t] = expert;
    const std::vector<double> ref = dense_reference(c.config, c.weights.view(), c.hidden.view(),
                                                    c.routing.ids.view(), c.routing.weights.view());
    for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
      EXPECT_LE(relative_error(run_layer(c, layout).view(), ref), test::kLayerBf16)
          << "expert " << expert << " " << layout_name(layout);
    }
  }
}

TEST(Layer, StandardEpEqualsSingleRank) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const char* family : {"deepseek-v3", "qwen3-30b-a3b"}) {
    const LayerCase c(scaled_config(family), 100, seed);
    const HostTensor single = run_layer(c, Layout::kContiguous);
    for (int ranks : {1, 2, 4}) {
      MoeConfig ep = c.config;
      ep.ep_size = ranks;
      HostTensor out(DType::kBF16, {100, ep.hidden_size});
      test::poison(out);
      moe_forward_standard_ep(ep, c.weights.view(), c.hidden.view(), c.routing.ids.view(),
                              c.routing.weights.view(), out.view(),
                              {Layout::kMasked, 128, 0, false});
      EXPECT_LE(relative_error(out.view(), single.view()), kStandardEpVsSingleRank)
          << family << " over " << ranks << " ranks";
    }
  }
}

TEST(Layer, OverlapGivesTheSameBits) {
  const LayerCase c(scaled_config("deepseek-v3"), 150, test::fresh_seed());
  EXPECT_TRUE(test::bitwise_equal(run_layer(c, Layout::kMasked, true),
                                  run_layer(c, Layout::kMasked, false)));
}

TEST(LayerApi, ForwardRoutesWithTheLayersRouterThenRuns) {
  const auto seed = test::fresh_seed();
  const MoeConfig config = scaled_config("deepseek-v3");
  const LayerCase c(config, 40, seed);
  const HostTensor logits = random_router_logits(40, config.num_experts, seed);
  Layer layer(config, c.weights.view(), {Backend::kCpu, LayoutChoice::kAuto, 64, false});
  EXPECT_EQ(layer.backend(), Backend::kCpu);
  EXPECT_EQ(layer.layout_for(8), Layout::kMasked);
  EXPECT_EQ(layer.layout_for(4096), Layout::kContiguous);
  HostTensor out(DType::kBF16, {40, config.hidden_size});
  test::poison(out);
  layer.forward(c.hidden.view(), logits.view(), out.view());
  EXPECT_TRUE(test::bitwise_equal(out, run_layer(c, Layout::kMasked)));
  HostTensor too_many(DType::kBF16, {65, config.hidden_size});
  const HostTensor hidden65 = random_hidden_states(65, config.hidden_size, seed);
  const HostTensor logits65 = random_router_logits(65, config.num_experts, seed);
  EXPECT_THROW(layer.forward(hidden65.view(), logits65.view(), too_many.view()), InvalidArgument);
}

TEST(LayerApi, RejectsWeightsThatDisagreeWithTheConfig) {
  const MoeConfig config = scaled_config("qwen3-30b-a3b");
  MoeConfig other = config;
  other.intermediate_size = 64;
  const HostMoeWeights w = random_weights(other, config.num_experts, 1);
  try {
    Layer layer(config, w.view());
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "moerun: invalid w13 shape: expected [16, 192, 128], got [16, 128, 128]");
  }
}

}  // namespace
}  // namespace moerun::cpu
