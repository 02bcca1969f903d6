#include "core/layer_floor.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun {
namespace {

TEST(LayerFloor, ExpertBytesCountWeightsAndFp8Scales) {
  // DeepSeek-V3: H 7168, I 2048, e4m3 codes plus f32 scales of 128x128 blocks,
  // w13 [4096, 7168] -> 32 x 56 blocks, w2 [7168, 2048] -> 56 x 16.
  const MoeConfig deepseek = model_preset("deepseek-v3");
  EXPECT_EQ(expert_weight_bytes(deepseek), 3.0 * 2048 * 7168 + (32 * 56 + 56 * 16) * 4.0);
  // Qwen3-30B-A3B: H 2048, I 768, bf16, no scales.
  const MoeConfig qwen = model_preset("qwen3-30b-a3b");
  EXPECT_EQ(expert_weight_bytes(qwen), 3.0 * 768 * 2048 * 2);
  // Sizes that are not multiples of 128 round their blocks up.
  MoeConfig odd = deepseek;
  odd.hidden_size = 200;
  odd.intermediate_size = 130;
  EXPECT_EQ(expert_weight_bytes(odd), 3.0 * 130 * 200 + (3 * 2 + 2 * 2) * 4.0);
}

TEST(LayerFloor, LargerOfTheHbmAndGemmBounds) {
  const MoeConfig qwen = model_preset("qwen3-30b-a3b");
  const double expert = 3.0 * 768 * 2048 * 2;
  // Decode-like: 8 experts hit, few FLOPs: the weights' read bounds it.
  LayerFloor decode = layer_floor(qwen, 8, 1e9, 4000, 800);
  EXPECT_DOUBLE_EQ(decode.hbm_us, 8 * expert / 4000e9 * 1e6);
  EXPECT_DOUBLE_EQ(decode.gemm_us, 1e9 / 800e12 * 1e6);
  EXPECT_DOUBLE_EQ(decode.us(), decode.hbm_us);
  // Prefill-like: the FLOPs bound it (the weights take 302 us).
  const LayerFloor prefill = layer_floor(qwen, 128, 4e11, 4000, 800);
  EXPECT_DOUBLE_EQ(prefill.us(), 500.0);
  // No matrix rate measured: only the HBM bound.
  const LayerFloor no_rate = layer_floor(qwen, 128, 4e11, 4000, 0);
  EXPECT_EQ(no_rate.gemm_us, 0);
  EXPECT_DOUBLE_EQ(no_rate.us(), no_rate.hbm_us);
  // Nothing routed here: nothing to read, nothing to compute.
  EXPECT_EQ(layer_floor(qwen, 0, 0, 4000, 800).us(), 0);
}

TEST(LayerFloor, RejectsUnmeasuredOrNegativeInputsByName) {
  const MoeConfig qwen = model_preset("qwen3-30b-a3b");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const struct {
    double experts, flops, copy, matrix;
    const char* field;
  } cases[] = {{-1, 0, 4000, 800, "experts_used"}, {nan, 0, 4000, 800, "experts_used"},
               {1, -5, 4000, 800, "gemm_flops"},   {1, 0, 0, 800, "copy_gbs"},
               {1, 0, nan, 800, "copy_gbs"},       {1, 0, 4000, -1, "matrix_tflops"}};
  for (const auto& c : cases) {
    try {
      layer_floor(qwen, c.experts, c.flops, c.copy, c.matrix);
      ADD_FAILURE() << "accepted " << c.field;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.field), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace moerun
