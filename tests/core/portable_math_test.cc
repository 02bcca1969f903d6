// The portable fp32 exp / SiLU / sigmoid (core/portable_math.h): accuracy against long double,
// and the special values. That the GPU computes the same bits is portable_math_device_test.
#include "core/portable_math.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace moerun::detail {
namespace {

// |y - exp(x)| in units of the last place of exp(x) as a float (subnormal ulp below 2^-126).
double ulp_error(float x, float y) {
  const long double exact = std::exp(static_cast<long double>(x));
  int exponent = 0;
  std::frexp(exact, &exponent);
  const long double ulp = std::ldexp(1.0L, std::max(exponent - 24, -149));
  return static_cast<double>(std::fabs(static_cast<long double>(y) - exact) / ulp);
}

TEST(PortableMath, ExpWithinOneUlpOverTheFloatRange) {
  // Every 61st bit pattern (~70M inputs), all of which land in [-104, 89] or past it.
  double worst = 0.0;
  float worst_x = 0.0f;
  for (std::uint64_t u = 3; u < (1ull << 32); u += 61) {
    const float x = std::bit_cast<float>(static_cast<std::uint32_t>(u));
    if (!(x >= -104.0f && x <= 88.72f)) continue;  // below: 0, above: overflow (checked below)
    const double error = ulp_error(x, portable_expf(x));
    if (error > worst) {
      worst = error;
      worst_x = x;
    }
  }
  // Over every float in [-104, 88.72] (a one-off run, 2026-11-25): 0.94 ulp at worst.
  EXPECT_LT(worst, 1.0) << "at x = " << worst_x;
  EXPECT_GT(worst, 0.5) << "the sweep found no rounding error at all: is it sweeping?";
}

TEST(PortableMath, ExponentAddEqualsTheTwoStepScaling) {
  // Where the result is normal, portable_expf adds n to p's exponent; the edge path multiplies by
  // two powers of two. Both must give the same bits (the edge path also serves |x| <= 86 here).
  for (std::uint64_t u = 5; u < (1ull << 32); u += 4099) {
    const float x = std::bit_cast<float>(static_cast<std::uint32_t>(u));
    if (!(x >= -86.0f && x <= 86.0f)) continue;
    ASSERT_EQ(std::bit_cast<std::uint32_t>(portable_expf(x)),
              std::bit_cast<std::uint32_t>(portable_expf_edge(x)))
        << "x = " << x;
  }
}

TEST(PortableMath, ExpSpecialValues) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(portable_expf(0.0f), 1.0f);
  EXPECT_EQ(portable_expf(-0.0f), 1.0f);
  EXPECT_EQ(portable_expf(kInf), kInf);
  EXPECT_EQ(portable_expf(-kInf), 0.0f);
  EXPECT_TRUE(std::isnan(portable_expf(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(portable_expf(88.7229f), kInf);  // exp > FLT_MAX
  EXPECT_LT(ulp_error(88.72f, portable_expf(88.72f)), 1.0);
  EXPECT_EQ(portable_expf(-104.0f), 0.0f);
  // The subnormal range rounds once: the smallest subnormal, and a value near 2^-140.
  EXPECT_EQ(portable_expf(-103.5f), std::bit_cast<float>(1u));
  EXPECT_LT(ulp_error(-97.0f, portable_expf(-97.0f)), 1.0);
}

TEST(PortableMath, SiluAndSigmoid) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(silu_f32(0.0f), 0.0f);
  EXPECT_EQ(silu_f32(40.0f), 40.0f);
  EXPECT_EQ(silu_f32(-200.0f), -0.0f);
  EXPECT_TRUE(std::isnan(silu_f32(-kInf)));  // -inf / inf, as the formula says
  EXPECT_EQ(sigmoid_f32(0.0f), 0.5f);
  EXPECT_EQ(sigmoid_f32(kInf), 1.0f);
  EXPECT_EQ(sigmoid_f32(-kInf), 0.0f);
  for (float x = -20.0f; x <= 20.0f; x += 0.37f) {
    const double exact_sigmoid = 1.0 / (1.0 + std::exp(-static_cast<double>(x)));
    EXPECT_NEAR(sigmoid_f32(x), exact_sigmoid, 3e-7 * exact_sigmoid) << x;
    EXPECT_NEAR(silu_f32(x), x * exact_sigmoid, 3e-7 * std::fabs(x * exact_sigmoid) + 1e-30) << x;
  }
}

}  // namespace
}  // namespace moerun::detail
