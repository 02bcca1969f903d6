// Exhaustive properties of the host conversions (the toolkit comparison is dtype_toolkit_test).
#include "moerun/dtype.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace moerun {
namespace {

TEST(Bf16, EveryPatternRoundTripsThroughFloat) {
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = bf16_to_float(bf16{static_cast<std::uint16_t>(bits)});
    const std::uint16_t back = float_to_bf16(value).bits;
    if (std::isnan(value)) {
      EXPECT_EQ(back, 0x7fff) << "NaN pattern " << bits;
    } else {
      EXPECT_EQ(back, bits) << "pattern " << bits;
    }
  }
}

TEST(Bf16, RoundsToNearestEvenAtTies) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f).bits, 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
  EXPECT_EQ(float_to_bf16(1.0f + 3 * 0x1p-8f).bits, 0x3f82);
  EXPECT_EQ(float_to_bf16(1.0f + 0x1p-8f + 0x1p-20f).bits, 0x3f81);
}

TEST(Bf16, OverflowsToInfinityAndKeepsInfinity) {
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()).bits, 0x7f80);
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()).bits, 0xff80);
}

TEST(Fp8E4M3, EveryPatternRoundTripsThroughFloat) {
  for (int bits = 0; bits < 256; ++bits) {
    const float value = fp8e4m3_to_float(fp8e4m3{static_cast<std::uint8_t>(bits)});
    const std::uint8_t back = float_to_fp8e4m3(value).bits;
    if ((bits & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(value)) << bits;
      EXPECT_EQ(back, 0x7f) << "NaN stays NaN, canonical";
    } else {
      EXPECT_EQ(back, bits) << "pattern " << bits << " value " << value;
    }
  }
}

TEST(Fp8E4M3, KnownValues) {
  EXPECT_EQ(fp8e4m3_to_float(fp8e4m3{0x7e}), 448.0f);
  EXPECT_EQ(fp8e4m3_to_float(fp8e4m3{0x01}), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(fp8e4m3_to_float(fp8e4m3{0x08}), 0x1p-6f);  // smallest normal
  EXPECT_EQ(fp8e4m3_to_float(fp8e4m3{0x38}), 1.0f);
  EXPECT_EQ(fp8e4m3_to_float(fp8e4m3{0xb8}), -1.0f);
}

TEST(Fp8E4M3, SaturatesToMaxFinite) {
  EXPECT_EQ(float_to_fp8e4m3(464.0f).bits, 0x7e);  // tie between 448 and 480: even, 448
  EXPECT_EQ(float_to_fp8e4m3(std::nextafter(464.0f, 1000.0f)).bits, 0x7e);
  EXPECT_EQ(float_to_fp8e4m3(1e30f).bits, 0x7e);
  EXPECT_EQ(float_to_fp8e4m3(std::numeric_limits<float>::infinity()).bits, 0x7e);
  EXPECT_EQ(float_to_fp8e4m3(-std::numeric_limits<float>::infinity()).bits, 0xfe);
}

TEST(Fp8E4M3, RoundsToNearestEvenIncludingSubnormals) {
  EXPECT_EQ(float_to_fp8e4m3(0x1p-10f).bits, 0x00);          // half the smallest subnormal: even 0
  EXPECT_EQ(float_to_fp8e4m3(0x1p-10f * 1.01f).bits, 0x01);  // just above: up
  EXPECT_EQ(float_to_fp8e4m3(3 * 0x1p-10f).bits, 0x02);      // 1.5 subnormal steps: even, 2
  EXPECT_EQ(float_to_fp8e4m3(1.0f + 0x1p-4f).bits, 0x38);    // tie between 1 and 1.125: even
  EXPECT_EQ(float_to_fp8e4m3(1.0f + 3 * 0x1p-4f).bits, 0x3a);
  EXPECT_EQ(float_to_fp8e4m3(-0.0f).bits, 0x80);
}

TEST(Fp8E4M3, NearestValueOverAFloatSweep) {
  // Every 97th float bit pattern: the result is a nearest e4m3 value of the (saturated) input.
  for (std::uint64_t bits = 0; bits <= 0xffffffffull; bits += 97) {
    const float x = std::bit_cast<float>(static_cast<std::uint32_t>(bits));
    if (std::isnan(x)) continue;
    const float q = fp8e4m3_to_float(float_to_fp8e4m3(x));
    const float clamped = std::fmax(-448.0f, std::fmin(448.0f, x));
    const float next_up = fp8e4m3_to_float(float_to_fp8e4m3(std::fabs(q)));
    ASSERT_EQ(next_up, std::fabs(q));
    // The distance to q is at most half the local e4m3 spacing.
    const int exponent =
        std::max(-6, std::ilogb(std::fabs(clamped) > 0 ? std::fabs(clamped) : 1e-9f));
    const float half_ulp = std::ldexp(1.0f, exponent - 4);
    ASSERT_LE(std::fabs(q - clamped), half_ulp) << "x = " << x;
  }
}

}  // namespace
}  // namespace moerun
