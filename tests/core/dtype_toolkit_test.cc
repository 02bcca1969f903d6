// Our host conversions against the CUDA toolkit's own host functions, bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "moerun/dtype.h"

namespace moerun {
namespace {

std::uint16_t toolkit_bf16(float x) {
  return static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(x)).x;
}

float toolkit_bf16_to_float(std::uint16_t bits) {
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __bfloat162float(__nv_bfloat16(raw));
}

std::uint8_t toolkit_fp8(float x) { return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3); }

float toolkit_fp8_to_float(std::uint8_t bits) {
  __nv_fp8_e4m3 v;
  v.__x = bits;
  return static_cast<float>(v);
}

bool same_bits_or_both_nan(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) ||
         std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

TEST(DtypeToolkit, EveryBf16PatternDecodesLikeTheToolkit) {
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto b = static_cast<std::uint16_t>(bits);
    ASSERT_TRUE(same_bits_or_both_nan(bf16_to_float(bf16{b}), toolkit_bf16_to_float(b))) << bits;
  }
}

TEST(DtypeToolkit, EveryFp8PatternDecodesLikeTheToolkit) {
  for (int bits = 0; bits < 256; ++bits) {
    const auto b = static_cast<std::uint8_t>(bits);
    ASSERT_TRUE(same_bits_or_both_nan(fp8e4m3_to_float(fp8e4m3{b}), toolkit_fp8_to_float(b)))
        << bits;
  }
}

TEST(DtypeToolkit, EveryFloatEncodesToBf16LikeTheToolkit) {
  // All 2^32 float patterns: a few seconds.
  for (std::uint64_t bits = 0; bits <= 0xffffffffull; ++bits) {
    const float x = std::bit_cast<float>(static_cast<std::uint32_t>(bits));
    const std::uint16_t ours = float_to_bf16(x).bits;
    if (ours != toolkit_bf16(x)) {
      FAIL() << "float bits " << std::hex << bits << ": ours " << ours << ", toolkit "
             << toolkit_bf16(x);
    }
  }
}

TEST(DtypeToolkit, FloatSweepEncodesToFp8LikeTheToolkit) {
  // Every 5th pattern whose magnitude is below 512 (where the rounding happens), both signs,
  // plus every 4099th pattern over the whole range (saturation, infinities, NaNs).
  const std::uint32_t limit = std::bit_cast<std::uint32_t>(512.0f);
  for (std::uint32_t bits = 0; bits < limit; bits += 5) {
    for (std::uint32_t sign : {0u, 0x80000000u}) {
      const float x = std::bit_cast<float>(bits | sign);
      if (float_to_fp8e4m3(x).bits != toolkit_fp8(x)) {
        FAIL() << "x = " << x << " ours " << int(float_to_fp8e4m3(x).bits) << " toolkit "
               << int(toolkit_fp8(x));
      }
    }
  }
  for (std::uint64_t bits = 0; bits <= 0xffffffffull; bits += 4099) {
    const float x = std::bit_cast<float>(static_cast<std::uint32_t>(bits));
    ASSERT_EQ(float_to_fp8e4m3(x).bits, toolkit_fp8(x)) << "x = " << x;
  }
}

TEST(DtypeToolkit, Fp8TiesAndNeighboursEncodeLikeTheToolkit) {
  // Midpoints between consecutive e4m3 values are where rounding rules differ; check each
  // midpoint and its float neighbours.
  for (int bits = 0; bits < 0x7e; ++bits) {
    const double lo = fp8e4m3_to_float(fp8e4m3{static_cast<std::uint8_t>(bits)});
    const double hi = fp8e4m3_to_float(fp8e4m3{static_cast<std::uint8_t>(bits + 1)});
    const auto mid = static_cast<float>((lo + hi) / 2);
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1000.0f)}) {
      ASSERT_EQ(float_to_fp8e4m3(x).bits, toolkit_fp8(x)) << "x = " << x;
      ASSERT_EQ(float_to_fp8e4m3(-x).bits, toolkit_fp8(-x)) << "x = " << -x;
    }
  }
  for (float x :
       {464.0f, 480.0f, std::numeric_limits<float>::infinity(),
        std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN()}) {
    ASSERT_EQ(float_to_fp8e4m3(x).bits, toolkit_fp8(x)) << "x = " << x;
  }
}

}  // namespace
}  // namespace moerun
