// The CPU layer against the stage reference (cpu/stage_reference.h), bit for bit: the layer's
// dispatch, permutation, activation and combine compose into exactly the stage definitions, in
// every family, layout, batch size and EP rank, with skipped slots and local expert 0 in use.
// Bitwise, so no tolerance can hide a numerics change such as a bf16 accumulation.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <tuple>

#include "core/metrics.h"
#include "cpu/layer.h"
#include "cpu/layer_fixture.h"
#include "cpu/stage_reference.h"
#include "moerun/layer.h"
#include "test_util.h"

namespace moerun::cpu {
namespace {

using test::LayerCase;

// Some slots skipped (-1), and every fourth token's first slot on the rank's local expert 0.
void awkward_routing(LayerCase& c, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int k = c.config.top_k();
  int* ids = c.routing.ids.data<int>();
  for (std::int64_t t = 0; t < c.hidden.size(0); ++t) {
    for (int j = 0; j < k; ++j) {
      if (rng() % 7 == 0) ids[t * k + j] = -1;
    }
    if (t % 4 == 0) {
      const int expert0 = c.config.first_local_expert();
      for (int j = 1; j < k; ++j) {
        if (ids[t * k + j] == expert0) ids[t * k + j] = -1;  // ids stay distinct per token
      }
      ids[t * k] = expert0;
    }
  }
}

void expect_bitwise(const HostTensor& got, const HostTensor& want) {
  ASSERT_EQ(got.nbytes(), want.nbytes());
  std::int64_t differing = 0;
  const std::size_t size = dtype_size(got.dtype());
  for (std::int64_t i = 0; i < got.numel(); ++i) {
    differing +=
        std::memcmp(static_cast<const std::byte*>(got.view().data()) + i * size,
                    static_cast<const std::byte*>(want.view().data()) + i * size, size) != 0;
  }
  EXPECT_EQ(differing, 0) << "of " << got.numel() << " elements; relative error "
                          << relative_error(got.view(), want.view());
}

class LayerVsStageReference
    : public ::testing::TestWithParam<std::tuple<std::string, Layout, std::int64_t, bool>> {};

TEST_P(LayerVsStageReference, Bitwise) {
  const auto& [family, layout, tokens, ep] = GetParam();
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  MoeConfig config = test::scaled_config(family);
  if (ep) {
    config.ep_size = 2;
    config.ep_rank = 1;  // experts [E/2, E): their local expert 0 is global E/2
  }
  LayerCase c(config, tokens, seed);
  awkward_routing(c, seed);
  const MoeWeights local =
      c.weights.view().slice_experts(config.first_local_expert(), config.num_local_experts());
  const DType out_dtype = ep ? DType::kF32 : DType::kBF16;
  HostTensor out(out_dtype, {tokens, config.hidden_size});
  test::poison(out);
  moe_forward(config, local, c.hidden.view(), c.routing.ids.view(), c.routing.weights.view(),
              out.view(), {layout, 128, 0, layout == Layout::kMasked});
  expect_bitwise(out, test::stage_reference(config, local, c.hidden.view(), c.routing.ids.view(),
                                            c.routing.weights.view(), out_dtype));
}

INSTANTIATE_TEST_SUITE_P(Families, LayerVsStageReference,
                         ::testing::Combine(::testing::Values("deepseek-v3", "qwen3-30b-a3b",
                                                              "mixtral-8x7b"),
                                            ::testing::Values(Layout::kMasked, Layout::kContiguous),
                                            ::testing::Values(1, 45, 130), ::testing::Bool()),
                         [](const auto& param_info) {
                           std::string name = std::get<0>(param_info.param);
                           for (char& ch : name)
                             ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return name + "_" +
                                  std::string(layout_name(std::get<1>(param_info.param))) + "_T" +
                                  std::to_string(std::get<2>(param_info.param)) +
                                  (std::get<3>(param_info.param) ? "_rank1of2" : "");
                         });

// Through the public API, with the layer's own routing and layout choice.
TEST(LayerVsStageReference, PublicLayerBitwise) {
  const auto seed = test::fresh_seed();
  for (const char* family : {"deepseek-v3", "qwen3-30b-a3b"}) {
    SCOPED_TRACE(family);
    const MoeConfig config = test::scaled_config(family);
    const LayerCase c(config, 90, seed);
    const HostTensor logits = random_router_logits(90, config.num_experts, seed);
    const TopK routing =
        route(config.routing, config.num_experts, logits.view(), c.weights.correction_bias.view());
    LayerOptions options;
    options.backend = Backend::kCpu;
    Layer layer(config, c.weights.view(), options);
    HostTensor out(DType::kBF16, {90, config.hidden_size});
    test::poison(out);
    layer.forward(c.hidden.view(), logits.view(), out.view());
    expect_bitwise(out, test::stage_reference(config, c.weights.view(), c.hidden.view(),
                                              routing.ids.view(), routing.weights.view()));
  }
}

}  // namespace
}  // namespace moerun::cpu
