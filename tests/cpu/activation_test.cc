#include "cpu/activation.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/portable_math.h"
#include "cpu/quant.h"
#include "test_util.h"

namespace moerun::cpu {
namespace {

float silu_mul_fp32(float g, float u) { return detail::silu_f32(g) * u; }

TEST(SiluAndMul, HandCheckedBf16) {
  // I = 8; one row: gate = [-2, -1, 0, 1, 2, 3, 4, 5], up = 2.
  std::vector<float> row = {-2, -1, 0, 1, 2, 3, 4, 5, 2, 2, 2, 2, 2, 2, 2, 2};
  const HostTensor gate_up = test::make_bf16(1, 16, row);
  HostTensor out(DType::kBF16, {1, 8});
  test::poison(out);
  silu_and_mul(gate_up.view(), {{0, 0, 1}}, out.view());
  for (int c = 0; c < 8; ++c) {
    const double g = row[c];
    const double expected = g / (1.0 + std::exp(-g)) * 2.0;
    EXPECT_NEAR(bf16_to_float(out.data<bf16>()[c]), expected, std::fabs(expected) * 0x1p-8 + 1e-6)
        << c;
    EXPECT_EQ(out.data<bf16>()[c].bits, float_to_bf16(silu_mul_fp32(row[c], 2.0f)).bits);
  }
}

TEST(SiluAndMul, Fp8OutputIsTheQuantizedFp32Result) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::int64_t rows = 3, inter = 256;
  const HostTensor gu32 = test::random_f32(rows, 2 * inter, seed, -6.0f, 6.0f);
  HostTensor gate_up(DType::kBF16, {rows, 2 * inter});
  for (std::int64_t i = 0; i < gate_up.numel(); ++i)
    gate_up.data<bf16>()[i] = float_to_bf16(gu32.data<float>()[i]);
  HostTensor out(DType::kFP8E4M3, {rows, inter});
  HostTensor scale(DType::kF32, {inter / 128, rows});  // MN-major (core/scale_layout.h)
  test::poison(out);
  test::poison(scale);
  // Rows 0 and 2 hold tokens; row 1 does not and must stay poisoned.
  silu_and_mul(gate_up.view(), {{0, 0, 1}, {1, 2, 3}}, out.view(), scale.view());
  for (std::int64_t r : {0, 2}) {
    std::vector<float> y(inter);
    for (std::int64_t c = 0; c < inter; ++c) {
      y[c] = silu_mul_fp32(bf16_to_float(gate_up.data<bf16>()[r * 2 * inter + c]),
                           bf16_to_float(gate_up.data<bf16>()[r * 2 * inter + inter + c]));
    }
    std::vector<fp8e4m3> codes(inter);
    float s[2];
    quantize_row_fp8(y.data(), inter, codes.data(), s);
    for (std::int64_t c = 0; c < inter; ++c)
      EXPECT_EQ(out.data<fp8e4m3>()[r * inter + c].bits, codes[c].bits);
    EXPECT_EQ(scale.data<float>()[0 * rows + r], s[0]);
    EXPECT_EQ(scale.data<float>()[1 * rows + r], s[1]);
  }
  for (std::int64_t c = 0; c < inter; ++c) EXPECT_EQ(out.data<fp8e4m3>()[inter + c].bits, 0xff);
  EXPECT_TRUE(std::isnan(scale.data<float>()[0 * rows + 1]));
  EXPECT_TRUE(std::isnan(scale.data<float>()[1 * rows + 1]));
}

}  // namespace
}  // namespace moerun::cpu
