// LayerOptions::check_finite on the CPU backend: NaN and infinities where the caller's data
// enters are rejected, naming the caller's tensor and its first bad element; off, they pass.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "cpu/layer_fixture.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "test_util.h"

namespace moerun {
namespace {

using test::LayerCase;
using test::scaled_config;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

LayerOptions cpu_options(bool check_finite = true) {
  LayerOptions o;
  o.backend = Backend::kCpu;
  o.check_finite = check_finite;
  return o;
}

// A random element [row, col] of a [rows, cols] tensor.
std::pair<std::int64_t, std::int64_t> pick(std::int64_t rows, std::int64_t cols,
                                           std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  return {static_cast<std::int64_t>(rng() % rows), static_cast<std::int64_t>(rng() % cols)};
}

std::string element(const char* name, std::int64_t r, std::int64_t c) {
  return std::string(name) + "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
}

TEST(LayerFinite, NanHiddenStatesAreNamedEvenWhenTheLogitsHoldNanToo) {
  const auto seed = test::fresh_seed();
  const MoeConfig config = scaled_config("qwen3-30b-a3b");
  LayerCase c(config, 40, seed);
  HostTensor logits = random_router_logits(40, config.num_experts, seed);
  Layer layer(config, c.weights.view(), cpu_options());
  HostTensor out(DType::kBF16, {40, config.hidden_size});
  test::poison(out);
  const auto [t, col] = pick(39, config.hidden_size, seed);  // before the one planted in row 39
  c.hidden.data<bf16>()[t * config.hidden_size + col] = float_to_bf16(kNan);
  // A later element too: the first one is named.
  c.hidden.data<bf16>()[39 * config.hidden_size + config.hidden_size - 1] = float_to_bf16(-kInf);
  logits.data<float>()[0] = kNan;  // what NaN hidden states would have made of them
  const std::string message =
      test::error_of([&] { layer.forward(c.hidden.view(), logits.view(), out.view()); });
  EXPECT_EQ(message, "moerun: invalid " + element("hidden_states", t, col) +
                         ": expected a finite value, got nan");
  const std::string routed = test::error_of([&] {
    layer.forward_routed(c.hidden.view(), c.routing.ids.view(), c.routing.weights.view(),
                         out.view());
  });
  EXPECT_EQ(routed, message);
}

TEST(LayerFinite, InfiniteRouterLogitsAreNamed) {
  const auto seed = test::fresh_seed();
  const MoeConfig config = scaled_config("deepseek-v3");
  const LayerCase c(config, 20, seed);
  HostTensor logits = random_router_logits(20, config.num_experts, seed);
  const auto [t, e] = pick(20, config.num_experts, seed);
  logits.data<float>()[t * config.num_experts + e] = kInf;
  Layer layer(config, c.weights.view(), cpu_options());
  HostTensor out(DType::kBF16, {20, config.hidden_size});
  EXPECT_EQ(
      test::error_of([&] { layer.forward(c.hidden.view(), logits.view(), out.view()); }),
      "moerun: invalid " + element("router_logits", t, e) + ": expected a finite value, got inf");
}

TEST(LayerFinite, BadWeightsAndScalesAreNamedAtConstruction) {
  const auto seed = test::fresh_seed();
  const MoeConfig config = scaled_config("deepseek-v3");  // FP8, grouped routing with a bias
  struct Case {
    const char* tensor;
    float value;
    const char* expected;
    const char* got;
  };
  const Case cases[] = {{"w13_scale", 0.0f, "a finite value > 0 (an FP8 block scale)", "0"},
                        {"w13_scale", -0.0f, "a finite value > 0 (an FP8 block scale)", "-0"},
                        {"w2_scale", -2.5f, "a finite value > 0 (an FP8 block scale)", "-2.5"},
                        {"w2_scale", kInf, "a finite value > 0 (an FP8 block scale)", "inf"},
                        {"w13_scale", kNan, "a finite value > 0 (an FP8 block scale)", "nan"},
                        {"correction_bias", kNan, "a finite value", "nan"},
                        {"w13", kNan, "a finite value", "nan"},
                        {"w2", kNan, "a finite value", "nan"}};
  for (const Case& k : cases) {
    SCOPED_TRACE(std::string(k.tensor) + " = " + k.got);
    HostMoeWeights w = random_weights(config, config.num_experts, seed);
    const HostTensor& t = std::string(k.tensor) == "w13_scale"  ? w.w13_scale
                          : std::string(k.tensor) == "w2_scale" ? w.w2_scale
                          : std::string(k.tensor) == "w13"      ? w.w13
                          : std::string(k.tensor) == "w2"       ? w.w2
                                                                : w.correction_bias;
    const std::int64_t index =
        static_cast<std::int64_t>(seed % static_cast<std::uint64_t>(t.numel()));
    if (t.dtype() == DType::kFP8E4M3) {
      t.data<fp8e4m3>()[index] = fp8e4m3{0x7f};  // e4m3fn's NaN
    } else {
      t.data<float>()[index] = k.value;
    }
    std::int64_t rest = index;
    std::string dims;
    for (int d = t.shape().ndim() - 1; d >= 0; --d) {
      dims = std::to_string(rest % t.size(d)) + (dims.empty() ? "" : ", ") + dims;
      rest /= t.size(d);
    }
    EXPECT_EQ(test::error_of([&] { Layer layer(config, w.view(), cpu_options()); }),
              "moerun: invalid " + std::string(k.tensor) + "[" + dims + "]: expected " +
                  k.expected + ", got " + k.got);
    EXPECT_NO_THROW(Layer(config, w.view(), cpu_options(false))) << "check_finite off";
  }
}

TEST(LayerFinite, OffLetsNanThrough) {
  const auto seed = test::fresh_seed();
  const MoeConfig config = scaled_config("mixtral-8x7b");
  LayerCase c(config, 8, seed);
  c.hidden.data<bf16>()[0] = float_to_bf16(kNan);
  Layer layer(config, c.weights.view(), cpu_options(false));
  HostTensor out(DType::kBF16, {8, config.hidden_size});
  test::poison(out);
  layer.forward_routed(c.hidden.view(), c.routing.ids.view(), c.routing.weights.view(), out.view());
  EXPECT_TRUE(std::isnan(bf16_to_float(out.data<bf16>()[0])));
  EXPECT_FALSE(std::isnan(bf16_to_float(out.data<bf16>()[config.hidden_size]))) << "token 1";
}

}  // namespace
}  // namespace moerun
