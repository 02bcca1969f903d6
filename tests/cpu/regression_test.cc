// One named test for each bug behind this project (DESIGN.md); none may come back.
#include <gtest/gtest.h>

#include <cmath>

#include "core/metrics.h"
#include "core/portable_math.h"
#include "cpu/activation.h"
#include "cpu/combine.h"
#include "cpu/dense_reference.h"
#include "cpu/dispatch.h"
#include "cpu/gemm.h"
#include "cpu/layer.h"
#include "cpu/layer_fixture.h"
#include "cpu/permute.h"
#include "test_util.h"
#include "tolerances.h"

namespace moerun::cpu {
namespace {

// Bug 1: a `> 0` test dropped local expert 0.
TEST(Regression, TokensRoutedToLocalExpertZeroContribute) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  MoeConfig config = test::scaled_config("qwen3-30b-a3b");  // 16 experts
  config.routing.top_k = 2;
  config.ep_size = 2;
  config.ep_rank = 1;  // owns global experts 8..15; global 8 is its local expert 0
  test::LayerCase c(config, 50, seed);
  for (std::int64_t t = 0; t < 50; ++t) {
    c.routing.ids.data<int>()[t * 2] = 8;
    c.routing.ids.data<int>()[t * 2 + 1] = 3;  // owned by rank 0
  }
  const HostTensor local = map_to_local(c.routing.ids.view(), config.local_expert_map());
  EXPECT_EQ(local.data<int>()[0], 0);
  EXPECT_EQ(local.data<int>()[1], -1);

  HostTensor partial(DType::kF32, {50, config.hidden_size});
  test::poison(partial);
  moe_forward(config, c.weights.view().slice_experts(8, 8), c.hidden.view(), c.routing.ids.view(),
              c.routing.weights.view(), partial.view(), {Layout::kMasked, 128, 0, false});
  // Rank 1's share is exactly expert 8's contribution.
  HostTensor only_expert_8 = c.routing.ids.clone();
  for (std::int64_t t = 0; t < 50; ++t) only_expert_8.data<int>()[t * 2 + 1] = -1;
  MoeConfig single = config;
  single.ep_size = 1;
  single.ep_rank = 0;
  const std::vector<double> ref = dense_reference(single, c.weights.view(), c.hidden.view(),
                                                  only_expert_8.view(), c.routing.weights.view());
  double norm = 0;
  for (double v : ref) norm += v * v;
  ASSERT_GT(norm, 0.0);
  EXPECT_LE(relative_error(partial.view(), ref), test::kLayerBf16);
}

// Bug 1, other side: -1 is the only skip, and a skipped slot's weight is never used.
TEST(Regression, MinusOneIsTheOnlySkip) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  test::LayerCase c(test::scaled_config("mixtral-8x7b"), 64, seed);
  for (std::int64_t t = 0; t < 64; t += 3) {
    c.routing.ids.data<int>()[t * 2 + 1] = -1;
    c.routing.weights.data<float>()[t * 2 + 1] = 1e6f;
  }
  const std::vector<double> ref = dense_reference(c.config, c.weights.view(), c.hidden.view(),
                                                  c.routing.ids.view(), c.routing.weights.view());
  for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
    HostTensor out(DType::kBF16, {64, c.config.hidden_size});
    test::poison(out);
    moe_forward(c.config, c.weights.view(), c.hidden.view(), c.routing.ids.view(),
                c.routing.weights.view(), out.view(), {layout, 128, 0, false});
    EXPECT_LE(relative_error(out.view(), ref), test::kLayerBf16) << layout_name(layout);
  }
}

// Bug 2: FP8 activations were produced for BF16 weights.
TEST(Regression, ActivationDtypeFollowsWeights) {
  const HostTensor hidden = random_hidden_states(10, 256, 1);
  const HostTensor ids = test::random_topk_ids(10, 2, 4, 1);
  for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
    const Permuted bf16_path =
        permute(hidden.view(), ids.view(), 4, 4, DType::kBF16, {layout, 0, 128});
    EXPECT_EQ(bf16_path.tokens.dtype(), DType::kBF16);
    EXPECT_FALSE(bf16_path.scales.defined());
    const Permuted fp8_path =
        permute(hidden.view(), ids.view(), 4, 4, DType::kFP8E4M3, {layout, 0, 128});
    EXPECT_EQ(fp8_path.tokens.dtype(), DType::kFP8E4M3);
    EXPECT_TRUE(fp8_path.scales.defined());
  }
}

// Bug 3: bf16 accumulation lost accuracy. Both cases below give a different answer when the
// intermediate is kept in bf16.
TEST(Regression, ActivationAndCombineAccumulateInFp32) {
  // Combine: 256 + 7 x 1.0. In bf16, 256 + 1 rounds back to 256 every time; in fp32 the sum is
  // 263, stored as bf16 264.
  std::vector<float> rows = {256.0f};
  for (int i = 0; i < 7; ++i) rows.push_back(1.0f);
  const HostTensor down = test::make_bf16(8, 1, rows);
  const HostTensor src2dst = test::make_i32(1, 8, {0, 1, 2, 3, 4, 5, 6, 7});
  const HostTensor weights = test::make_f32(1, 8, std::vector<float>(8, 1.0f));
  HostTensor out(DType::kBF16, {1, 1});
  combine(down.view(), src2dst.view(), weights.view(), out.view());
  float bf16_accumulated = 0.0f;
  for (float r : rows) bf16_accumulated = round_to_bf16(bf16_accumulated + r);
  EXPECT_EQ(bf16_accumulated, 256.0f);
  EXPECT_EQ(bf16_to_float(out.data<bf16>()[0]), 264.0f);

  // Activation: find gate/up values where rounding silu(gate) to bf16 before the multiply changes
  // the stored result, then check that ours is the fp32 one.
  int differing = 0;
  for (int i = 0; i < 2000 && differing < 8; ++i) {
    const float g = round_to_bf16(-4.0f + 0.004f * static_cast<float>(i));
    const float u = round_to_bf16(3.3f);
    const float silu = detail::silu_f32(g);
    const float fp32 = round_to_bf16(silu * u);
    const float through_bf16 = round_to_bf16(round_to_bf16(silu) * u);
    if (fp32 == through_bf16) continue;
    ++differing;
    const HostTensor gate_up =
        test::make_bf16(1, 16, {g, g, g, g, g, g, g, g, u, u, u, u, u, u, u, u});
    HostTensor act(DType::kBF16, {1, 8});
    silu_and_mul(gate_up.view(), {{0, 0, 1}}, act.view());
    EXPECT_EQ(bf16_to_float(act.data<bf16>()[0]), fp32) << "gate " << g;
  }
  EXPECT_EQ(differing, 8) << "the search must find discriminating inputs";
}

// Bug 4: an optional GEMM report was unpacked when absent.
TEST(Regression, GemmWithoutOverlapReportIsHandled) {
  const test::LayerCase c(test::scaled_config("deepseek-v3"), 33, test::fresh_seed());
  const std::int64_t k = c.config.hidden_size;
  const int experts = c.config.num_experts;
  HostTensor a(DType::kFP8E4M3, {experts, 128, k});
  HostTensor a_scale(DType::kF32, {experts, k / 128, 128});  // MN-major (core/scale_layout.h)
  for (std::int64_t i = 0; i < a.numel(); ++i) a.data<fp8e4m3>()[i] = fp8e4m3{0x38};
  for (std::int64_t i = 0; i < a_scale.numel(); ++i) a_scale.data<float>()[i] = 1.0f;
  const HostTensor masked_m = test::make_i32(1, experts, std::vector<int>(experts, 3));
  HostTensor out(DType::kBF16, {experts, 128, 2 * c.config.intermediate_size});
  const auto report = grouped_gemm_masked(
      {a.view(), a_scale.view()}, {c.weights.w13.view(), c.weights.w13_scale.view()},
      TensorView(masked_m.view().data(), DType::kI32, {experts}), out.view());
  EXPECT_FALSE(report.has_value());
  // The layer runs with the report off, and gives the same bits as with it on.
  HostTensor off(DType::kBF16, {33, k}), on(DType::kBF16, {33, k});
  moe_forward(c.config, c.weights.view(), c.hidden.view(), c.routing.ids.view(),
              c.routing.weights.view(), off.view(), {Layout::kMasked, 128, 0, false});
  moe_forward(c.config, c.weights.view(), c.hidden.view(), c.routing.ids.view(),
              c.routing.weights.view(), on.view(), {Layout::kMasked, 128, 0, true});
  EXPECT_TRUE(test::bitwise_equal(off, on));
}

}  // namespace
}  // namespace moerun::cpu
