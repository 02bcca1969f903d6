// The engine-facing API on the CPU backend (the oracle): per-call context, local ids, arbitrary
// expert placement, the output scale and pre-quantized FP8 input.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/metrics.h"
#include "cpu/dense_reference.h"
#include "cpu/dispatch.h"
#include "cpu/ep_reduce.h"
#include "cpu/layer.h"
#include "cpu/layer_fixture.h"
#include "engine_fixture.h"
#include "moerun/errors.h"
#include "moerun/expert_map.h"
#include "moerun/layer.h"
#include "test_util.h"
#include "tolerances.h"

namespace moerun::cpu {
namespace {

using test::LayerCase;
using test::scaled_config;

HostTensor new_out(std::int64_t tokens, const MoeConfig& c, DType dtype = DType::kBF16) {
  HostTensor out(dtype, {tokens, c.hidden_size});
  test::poison(out);
  return out;
}

LayerOptions cpu_options(LayoutChoice layout = LayoutChoice::kAuto) {
  LayerOptions o;
  o.backend = Backend::kCpu;
  o.layout = layout;
  return o;
}

TEST(EngineApi, ContextForwardsEqualTheConvenienceForwards) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeConfig config = scaled_config("deepseek-v3");
  const LayerCase c(config, 33, seed);
  const HostTensor logits = random_router_logits(33, config.num_experts, seed);
  Layer layer(config, c.weights.view(), cpu_options());
  EXPECT_EQ(layer.device(), Device{});
  EXPECT_EQ(layer.workspace_bytes_for(33), 0u) << "the CPU backend needs no workspace";
  const ForwardContext context{};
  const Layer& engine = layer;  // the engine API is const
  HostTensor a = new_out(33, config), b = new_out(33, config);
  engine.forward(c.hidden.view(), logits.view(), a.view(), context);
  layer.forward(c.hidden.view(), logits.view(), b.view());
  EXPECT_TRUE(test::bitwise_equal(a, b));
  HostTensor routed = new_out(33, config);
  engine.forward_routed(c.hidden.view(), {c.routing.ids.view(), c.routing.weights.view()},
                        routed.view(), context);
  EXPECT_TRUE(test::bitwise_equal(a, routed)) << "the layer's router is cpu::route";
}

// SGLang passes ids already local, -1 for remote experts: the same result as global ids mapped.
TEST(EngineApi, LocalIdsEqualGlobalIdsMapped) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (bool round_robin : {false, true}) {
    MoeConfig config = scaled_config("qwen3-30b-a3b");  // 16 experts
    config.ep_size = 4;
    config.ep_rank = 1;
    if (round_robin) config.expert_map = round_robin_expert_map(16, 4, 1);
    const LayerCase c(config, 70, seed);
    const HostMoeWeights local = test::rank_weights(c.weights.view(), config.local_expert_map());
    const Layer layer(config, local.view(), cpu_options());
    HostTensor global_out = new_out(70, config, DType::kF32);
    HostTensor local_out = new_out(70, config, DType::kF32);
    layer.forward_routed(c.hidden.view(), {c.routing.ids.view(), c.routing.weights.view()},
                         global_out.view(), {});
    const HostTensor local_ids = map_to_local(c.routing.ids.view(), config.local_expert_map());
    layer.forward_routed(c.hidden.view(),
                         {local_ids.view(), c.routing.weights.view(), ExpertIds::kLocal},
                         local_out.view(), {});
    EXPECT_TRUE(test::bitwise_equal(global_out, local_out)) << (round_robin ? "map" : "contiguous");
    // The same placement given per call (as vLLM passes its expert_map) changes nothing.
    std::vector<std::int32_t> map = config.local_expert_map();
    const TensorView map_view(map.data(), DType::kI32, {16});
    HostTensor per_call = new_out(70, config, DType::kF32);
    layer.forward_routed(
        c.hidden.view(),
        {c.routing.ids.view(), c.routing.weights.view(), ExpertIds::kGlobal, map_view},
        per_call.view(), {});
    EXPECT_TRUE(test::bitwise_equal(global_out, per_call)) << "per-call map";
    // A local id is checked against E_l (4), not E.
    HostTensor bad = local_ids.clone();
    bad.data<int>()[1] = 4;
    EXPECT_EQ(test::error_of([&] {
                layer.forward_routed(c.hidden.view(),
                                     {bad.view(), c.routing.weights.view(), ExpertIds::kLocal},
                                     local_out.view(), {});
              }),
              "moerun: invalid topk_ids[0, 1]: expected an expert id in [-1, 4), got 4");
  }
}

// A per-call map overrides the config's placement (vLLM's EPLB may move experts between calls);
// it must place the layer's E_l experts.
TEST(EngineApi, PerCallExpertMapOverridesThePlacement) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  MoeConfig contiguous = scaled_config("qwen3-30b-a3b");  // 16 experts
  contiguous.ep_size = 4;
  contiguous.ep_rank = 2;
  MoeConfig moved = contiguous;
  moved.expert_map = round_robin_expert_map(16, 4, 3);
  const LayerCase c(contiguous, 50, seed);
  // One set of 4 local weights, placed two ways.
  const HostMoeWeights local = test::rank_weights(c.weights.view(), moved.expert_map);
  HostTensor want = new_out(50, moved, DType::kF32), got = new_out(50, moved, DType::kF32);
  Layer(moved, local.view(), cpu_options())
      .forward_routed(c.hidden.view(), {c.routing.ids.view(), c.routing.weights.view()},
                      want.view(), {});
  const Layer layer(contiguous, local.view(), cpu_options());
  const TensorView map(moved.expert_map.data(), DType::kI32, {16});
  layer.forward_routed(c.hidden.view(),
                       {c.routing.ids.view(), c.routing.weights.view(), ExpertIds::kGlobal, map},
                       got.view(), {});
  EXPECT_TRUE(test::bitwise_equal(want, got));
  std::vector<std::int32_t> five = round_robin_expert_map(16, 3, 0);  // 6 local experts
  const TensorView wrong(five.data(), DType::kI32, {16});
  EXPECT_EQ(test::error_of([&] {
              layer.forward_routed(
                  c.hidden.view(),
                  {c.routing.ids.view(), c.routing.weights.view(), ExpertIds::kGlobal, wrong},
                  got.view(), {});
            }),
            "moerun: invalid expert_map local experts: expected 4 (the layer's E_l), got 6");
}

// Experts placed round-robin over 3 ranks (16 is not a multiple of 3): the ranks' f32 partials
// summed give the single-rank layer, and the fp64 reference.
TEST(EngineApi, ArbitraryPlacementPartialsSumToTheWholeLayer) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const char* family : {"deepseek-v3", "qwen3-30b-a3b"}) {
    SCOPED_TRACE(family);
    const MoeConfig config = scaled_config(family);
    const LayerCase c(config, 90, seed);
    const HostTensor single = [&] {
      HostTensor out = new_out(90, config);
      Layer(config, c.weights.view(), cpu_options())
          .forward_routed(c.hidden.view(), c.routing.ids.view(), c.routing.weights.view(),
                          out.view());
      return out;
    }();
    constexpr int kRanks = 3;
    PartialSum sum(90, config.hidden_size);
    for (int rank = 0; rank < kRanks; ++rank) {
      MoeConfig rank_config = config;
      rank_config.ep_size = kRanks;
      rank_config.ep_rank = rank;
      rank_config.expert_map = round_robin_expert_map(config.num_experts, kRanks, rank);
      const HostMoeWeights local = test::rank_weights(c.weights.view(), rank_config.expert_map);
      const Layer layer(rank_config, local.view(), cpu_options(LayoutChoice::kMasked));
      EXPECT_EQ(layer.config().num_local_experts(), rank < 1 ? 6 : 5);
      HostTensor partial = new_out(90, config, DType::kF32);
      layer.forward_routed(c.hidden.view(), {c.routing.ids.view(), c.routing.weights.view()},
                           partial.view(), {});
      sum.add(partial.view());
    }
    HostTensor out = new_out(90, config);
    sum.store_bf16(out.view());
    EXPECT_LE(relative_error(out.view(), single.view()), test::kStandardEpVsSingleRank);
    const std::vector<double> ref = dense_reference(config, c.weights.view(), c.hidden.view(),
                                                    c.routing.ids.view(), c.routing.weights.view());
    EXPECT_LE(relative_error(out.view(), ref),
              config.is_fp8() ? test::kLayerFp8 : test::kLayerBf16);
  }
}

TEST(EngineApi, OutputScaleMultipliesTheOutputNotTheRouting) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (const char* family : {"deepseek-v3", "mixtral-8x7b"}) {
    SCOPED_TRACE(family);
    MoeConfig config = scaled_config(family);
    const LayerCase c(config, 40, seed);
    HostTensor plain = new_out(40, config);
    Layer(config, c.weights.view(), cpu_options())
        .forward_routed(c.hidden.view(), c.routing.ids.view(), c.routing.weights.view(),
                        plain.view());
    // Times 2 in fp32 before the rounding is exactly twice the rounded value.
    config.output_scale = 2.0f;
    HostTensor doubled = new_out(40, config);
    Layer(config, c.weights.view(), cpu_options())
        .forward_routed(c.hidden.view(), c.routing.ids.view(), c.routing.weights.view(),
                        doubled.view());
    for (std::int64_t i = 0; i < plain.numel(); ++i) {
      ASSERT_EQ(bf16_to_float(doubled.data<bf16>()[i]), 2.0f * bf16_to_float(plain.data<bf16>()[i]))
          << i;
    }
    config.output_scale = 2.5f;  // DeepSeek-V3's routed_scaling_factor, applied on the output
    HostTensor scaled = new_out(40, config);
    Layer(config, c.weights.view(), cpu_options())
        .forward_routed(c.hidden.view(), c.routing.ids.view(), c.routing.weights.view(),
                        scaled.view());
    const std::vector<double> ref = dense_reference(config, c.weights.view(), c.hidden.view(),
                                                    c.routing.ids.view(), c.routing.weights.view());
    EXPECT_LE(relative_error(scaled.view(), ref),
              config.is_fp8() ? test::kLayerFp8 : test::kLayerBf16);
  }
}

// Hidden states quantized by the caller with moerun's recipe give the bits of the bf16 input.
TEST(EngineApi, PrequantizedFp8InputEqualsQuantizingInside) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeConfig config = scaled_config("deepseek-v3");
  const LayerCase c(config, 150, seed);
  const test::QuantizedHidden q = test::quantize_hidden(c.hidden);
  for (LayoutChoice layout : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
    const Layer layer(config, c.weights.view(), cpu_options(layout));
    HostTensor from_bf16 = new_out(150, config), from_fp8 = new_out(150, config);
    const TopKRouting routing{c.routing.ids.view(), c.routing.weights.view()};
    layer.forward_routed(c.hidden.view(), routing, from_bf16.view(), {});
    layer.forward_routed({q.codes.view(), q.scales.view()}, routing, from_fp8.view(), {});
    EXPECT_TRUE(test::bitwise_equal(from_bf16, from_fp8));
  }
}

TEST(EngineApi, PrequantizedInputIsCheckedNamingTheField) {
  const MoeConfig config = scaled_config("deepseek-v3");
  const LayerCase c(config, 4, 1);
  test::QuantizedHidden q = test::quantize_hidden(c.hidden);
  const Layer layer(config, c.weights.view(), cpu_options());
  HostTensor out = new_out(4, config);
  const TopKRouting routing{c.routing.ids.view(), c.routing.weights.view()};
  auto run = [&](const HiddenStates& hidden) {
    return test::error_of([&] { layer.forward_routed(hidden, routing, out.view(), {}); });
  };
  q.scales.data<float>()[3] = 0.0f;
  EXPECT_EQ(run({q.codes.view(), q.scales.view()}),
            "moerun: invalid hidden_states scale[1, 1]: expected finite and > 0, got 0.000000");
  q.scales.data<float>()[3] = NAN;
  EXPECT_CONTAINS(run({q.codes.view(), q.scales.view()}), "hidden_states scale[1, 1]");
  q.scales.data<float>()[3] = 1.0f;
  q.codes.data<fp8e4m3>()[5].bits = 0xff;
  EXPECT_EQ(run({q.codes.view(), q.scales.view()}),
            "moerun: invalid hidden_states[0, 5]: expected a finite e4m3 code, got NaN");
  q.codes.data<fp8e4m3>()[5].bits = 0;
  const HostTensor short_scale(DType::kF32, {4, 1});
  EXPECT_EQ(run({q.codes.view(), short_scale.view()}),
            "moerun: invalid hidden_states scale shape: expected [4, 2], got [4, 1]");
  // BF16 weights take bf16 activations only (activations follow the weights).
  const MoeConfig bf16_config = scaled_config("qwen3-30b-a3b");
  const LayerCase b(bf16_config, 4, 1);
  const Layer bf16_layer(bf16_config, b.weights.view(), cpu_options());
  HostTensor codes(DType::kFP8E4M3, {4, bf16_config.hidden_size});
  HostTensor scales(DType::kF32, {4, 1});
  HostTensor bf16_out = new_out(4, bf16_config);
  EXPECT_EQ(test::error_of([&] {
              bf16_layer.forward_routed({codes.view(), scales.view()},
                                        {b.routing.ids.view(), b.routing.weights.view()},
                                        bf16_out.view(), {});
            }),
            "moerun: invalid hidden_states dtype: expected bf16 (pre-quantized FP8 input needs "
            "FP8 weights), got fp8_e4m3");
}

}  // namespace
}  // namespace moerun::cpu
