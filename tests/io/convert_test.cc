// File-dtype conversions and the fp32 router GEMM.
#include "io/convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/router_gemm.h"
#include "moerun/errors.h"

namespace moerun::io {
namespace {

TEST(Convert, F16ToFloatIsExact) {
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0xc000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_float(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(f16_to_float(0x3555), 0x1.554p-2f);
  EXPECT_EQ(f16_to_float(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_float(0x7e00)));
  EXPECT_TRUE(std::signbit(f16_to_float(0x8000)));
}

TEST(Convert, ToBf16RoundsToNearestEvenFromUnalignedSources) {
  const float values[3] = {1.0f, 1.00390625f /* 1 + 2^-8: a tie, to even (1.0) */,
                           1.01171875f /* 1 + 3 * 2^-8: a tie, to even (1 + 2^-6) */};
  std::byte buffer[1 + sizeof(values)];
  std::memcpy(buffer + 1, values, sizeof(values));
  bf16 out[3];
  convert_to_bf16(buffer + 1, StDType::kF32, 3, out);
  EXPECT_EQ(bf16_to_float(out[0]), 1.0f);
  EXPECT_EQ(bf16_to_float(out[1]), 1.0f);
  EXPECT_EQ(bf16_to_float(out[2]), 1.015625f);
}

TEST(Convert, ToF32WidensBf16AndF16) {
  const std::uint16_t b[2] = {0x3f80, 0xc040};  // bf16 1, -3
  float out[2];
  convert_to_f32(reinterpret_cast<const std::byte*>(b), StDType::kBF16, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  const std::uint16_t h[2] = {0x3c00, 0xc200};  // f16 1, -3
  convert_to_f32(reinterpret_cast<const std::byte*>(h), StDType::kF16, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
}

TEST(RouterGemm, Fp32DotProductsOfBf16Rows) {
  HostTensor hidden(DType::kBF16, {2, 3});
  const float x[6] = {1.0f, 2.0f, -1.0f, 0.5f, 0.25f, 4.0f};
  for (int i = 0; i < 6; ++i) hidden.data<bf16>()[i] = float_to_bf16(x[i]);
  HostTensor gate(DType::kF32, {2, 3});
  const float w[6] = {1.0f, 1.0f, 1.0f, 0.1f, -2.0f, 3.0f};
  std::memcpy(gate.data<float>(), w, sizeof(w));
  const HostTensor logits = cpu::router_logits(hidden.view(), gate.view());
  ASSERT_EQ(logits.shape(), (Shape{2, 2}));
  const float* l = logits.data<float>();
  EXPECT_EQ(l[0], 2.0f);
  EXPECT_EQ(l[1], ((0.1f * 1.0f) + (-2.0f * 2.0f)) + (3.0f * -1.0f));
  EXPECT_EQ(l[2], 4.75f);
  EXPECT_EQ(l[3], ((0.1f * 0.5f) + (-2.0f * 0.25f)) + (3.0f * 4.0f));
}

TEST(RouterGemm, RejectsMismatchedWidths) {
  HostTensor hidden(DType::kBF16, {2, 4});
  HostTensor gate(DType::kF32, {3, 5});
  EXPECT_THROW(cpu::router_logits(hidden.view(), gate.view()), InvalidArgument);
}

}  // namespace
}  // namespace moerun::io
