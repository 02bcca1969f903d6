#include "cpu/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/metrics.h"
#include "moerun/config.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun::cpu {
namespace {

TEST(QuantizeRowFp8, ScaleIsAmaxOver448AndAmaxMapsTo448) {
  std::vector<float> row(256);
  for (int c = 0; c < 256; ++c) row[c] = 0.01f * static_cast<float>(c % 50) - 0.2f;
  row[17] = -3.5f;   // group 0 amax
  row[200] = 0.75f;  // group 1 amax
  std::vector<fp8e4m3> codes(256);
  float scales[2];
  quantize_row_fp8(row.data(), 256, codes.data(), scales);
  EXPECT_FLOAT_EQ(scales[0], 3.5f / 448.0f);
  EXPECT_FLOAT_EQ(scales[1], 0.75f / 448.0f);
  EXPECT_EQ(fp8e4m3_to_float(codes[17]), -448.0f);
  EXPECT_EQ(fp8e4m3_to_float(codes[200]), 448.0f);
  for (int c = 0; c < 256; ++c) {
    const float back = fp8e4m3_to_float(codes[c]) * scales[c / 128];
    // Half an e4m3 ulp relative (2^-4), or the subnormal step for tiny values.
    EXPECT_LE(std::fabs(back - row[c]), std::fabs(row[c]) * 0.0625f + scales[c / 128] * 0x1p-9f)
        << c;
  }
}

TEST(QuantizeRowFp8, ZeroGroupGetsAFiniteScale) {
  std::vector<float> row(128, 0.0f);
  std::vector<fp8e4m3> codes(128);
  float scale = 0;
  quantize_row_fp8(row.data(), 128, codes.data(), &scale);
  EXPECT_TRUE(std::isfinite(scale));
  EXPECT_GT(scale, 0.0f);
  for (auto c : codes) EXPECT_EQ(fp8e4m3_to_float(c), 0.0f);
}

TEST(QuantizeWeightsFp8, OneScalePerBlockAndRoundTrip) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  HostTensor w(DType::kBF16, {2, 256, 384});
  for (std::int64_t i = 0; i < w.numel(); ++i) w.data<bf16>()[i] = float_to_bf16(normal(rng));
  // A large value in expert 1, block (1, 2) sets that block's scale alone.
  w.data<bf16>()[(1 * 256 + 130) * 384 + 300] = float_to_bf16(5.0f);
  const BlockQuantized q = quantize_weights_fp8(w.view());
  ASSERT_EQ(q.scales.shape(), Shape({2, 2, 3}));
  EXPECT_FLOAT_EQ(q.scales.data<float>()[(1 * 2 + 1) * 3 + 2], 5.0f / 448.0f);
  EXPECT_LT(q.scales.data<float>()[(1 * 2 + 1) * 3 + 1], 0.2f / 448.0f);
  const HostTensor back = dequantize_weights_fp8(q.weights.view(), q.scales.view());
  // e4m3 keeps 3 mantissa bits: about 2-3% RMS relative error on Gaussian values, never 10%.
  const double err = relative_error(back.view(), w.view());
  EXPECT_LT(err, 0.05);
  EXPECT_GT(err, 0.005);  // it is FP8, not a copy
}

TEST(QuantizeWeightsFp8, RejectsShapesNotMultiplesOf128) {
  HostTensor w(DType::kBF16, {1, 100, 128});
  EXPECT_THROW(quantize_weights_fp8(w.view()), InvalidArgument);
}

}  // namespace
}  // namespace moerun::cpu
