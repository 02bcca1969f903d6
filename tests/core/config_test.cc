#include "moerun/config.h"

#include <gtest/gtest.h>

#include "moerun/errors.h"

namespace moerun {
namespace {

std::string validation_error(const MoeConfig& c) {
  try {
    c.validate();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no error";
}

TEST(MoeConfig, PresetsMatchDesign) {
  const MoeConfig dsv3 = model_preset("deepseek-v3");
  EXPECT_EQ(dsv3.hidden_size, 7168);
  EXPECT_EQ(dsv3.intermediate_size, 2048);
  EXPECT_EQ(dsv3.num_experts, 256);
  EXPECT_EQ(dsv3.top_k(), 8);
  EXPECT_EQ(dsv3.routing.mode, RoutingMode::kGroupedTopK);
  EXPECT_EQ(dsv3.routing.num_groups, 8);
  EXPECT_EQ(dsv3.routing.topk_groups, 4);
  EXPECT_FLOAT_EQ(dsv3.routing.routed_scaling_factor, 2.5f);
  EXPECT_TRUE(dsv3.is_fp8());
  const MoeConfig qwen = model_preset("qwen3-30b-a3b");
  EXPECT_EQ(qwen.hidden_size, 2048);
  EXPECT_EQ(qwen.intermediate_size, 768);
  EXPECT_EQ(qwen.num_experts, 128);
  EXPECT_EQ(qwen.weight_dtype, DType::kBF16);
  const MoeConfig mixtral = model_preset("mixtral-8x7b");
  EXPECT_EQ(mixtral.intermediate_size, 14336);
  EXPECT_EQ(mixtral.top_k(), 2);
  for (const auto& name : model_preset_names())
    EXPECT_EQ(validation_error(model_preset(name)), "no error");
  EXPECT_THROW(model_preset("llama"), InvalidArgument);
}

TEST(MoeConfig, RejectsKAboveE) {
  MoeConfig c = model_preset("qwen3-30b-a3b");
  c.routing.top_k = 129;
  EXPECT_EQ(validation_error(c),
            "moerun: invalid top_k: expected 1 <= top_k <= num_experts (128), got 129");
}

TEST(MoeConfig, RejectsFp8HiddenSizeNotMultipleOf128) {
  MoeConfig c = model_preset("small");
  c.hidden_size = 1000;
  EXPECT_EQ(validation_error(c),
            "moerun: invalid hidden_size: expected a multiple of 128 for FP8 weights, got 1000");
  c.weight_dtype = DType::kBF16;  // BF16 needs only 16-byte rows
  EXPECT_EQ(validation_error(c), "no error");
}

TEST(MoeConfig, RejectsEpSizeThatDoesNotDivideExperts) {
  MoeConfig c = model_preset("small");
  c.ep_size = 3;
  EXPECT_EQ(validation_error(c),
            "moerun: invalid ep_size: expected a divisor of num_experts (32), or an expert_map for "
            "other placements, got 3");
  c.ep_size = 4;
  c.ep_rank = 4;
  EXPECT_EQ(validation_error(c),
            "moerun: invalid ep_rank: expected 0 <= ep_rank < ep_size (4), got 4");
}

TEST(MoeConfig, RejectsGroupedRoutingThatCannotPickK) {
  MoeConfig c = model_preset("small");  // 32 experts, 8 groups of 4
  c.routing.topk_groups = 1;            // 4 selectable experts, k = 8
  EXPECT_EQ(validation_error(c),
            "moerun: invalid top_k: expected <= experts in the kept groups (4), got 8");
  c.routing.topk_groups = 9;
  EXPECT_EQ(validation_error(c),
            "moerun: invalid topk_groups: expected 1 <= topk_groups <= num_groups (8), got 9");
}

}  // namespace
}  // namespace moerun
