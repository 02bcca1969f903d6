#include "cpu/combine.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/metrics.h"
#include "core/synthetic.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun::cpu {
namespace {

TEST(Combine, HandChecked) {
  // 3 rows of H = 2; token 0 uses rows 2 and 0 (row 0 is real), token 1 has one skipped slot.
  const HostTensor down = test::make_bf16(3, 2, {1.0f, 2.0f, 10.0f, 20.0f, 100.0f, 200.0f});
  const HostTensor src2dst = test::make_i32(2, 2, {2, 0, -1, 1});
  const HostTensor weights = test::make_f32(2, 2, {0.5f, 0.25f, 7.0f, 2.0f});
  HostTensor out(DType::kF32, {2, 2});
  test::poison(out);
  combine(down.view(), src2dst.view(), weights.view(), out.view());
  EXPECT_FLOAT_EQ(out.data<float>()[0], 50.25f);
  EXPECT_FLOAT_EQ(out.data<float>()[1], 100.5f);
  EXPECT_FLOAT_EQ(out.data<float>()[2], 20.0f);
  EXPECT_FLOAT_EQ(out.data<float>()[3], 40.0f);
}

TEST(Combine, OutputScaleMultipliesTheFp32SumBeforeRounding) {
  // 1 + 2^-8 is a bf16 tie that rounds to 1; times 3 it is 3 + 3 * 2^-8, which rounds up to the
  // bf16 3.015625. Scaling after the rounding would give 3.
  const HostTensor down = test::make_bf16(2, 1, {1.0f, 0.00390625f});
  const HostTensor src2dst = test::make_i32(1, 2, {0, 1});
  const HostTensor weights = test::make_f32(1, 2, {1.0f, 1.0f});
  HostTensor out(DType::kBF16, {1, 1});
  combine(down.view(), src2dst.view(), weights.view(), out.view());
  EXPECT_EQ(bf16_to_float(out.data<bf16>()[0]), 1.0f);
  test::poison(out);
  combine(down.view(), src2dst.view(), weights.view(), out.view(), 3.0f);
  EXPECT_EQ(bf16_to_float(out.data<bf16>()[0]), 3.015625f);
}

TEST(Combine, TokenWithoutLocalSlotsGetsZeros) {
  const HostTensor down = test::make_bf16(1, 4, {1, 2, 3, 4});
  const HostTensor src2dst = test::make_i32(1, 2, {-1, -1});
  const HostTensor weights = test::make_f32(1, 2, {1.0f, 1.0f});
  HostTensor out(DType::kBF16, {1, 4});
  test::poison(out);
  combine(down.view(), src2dst.view(), weights.view(), out.view());
  for (int c = 0; c < 4; ++c) EXPECT_EQ(bf16_to_float(out.data<bf16>()[c]), 0.0f);
}

TEST(Combine, RandomMatchesFp64) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::int64_t tokens = 257, h = 96, rows = 600;
  const int k = 8;
  const HostTensor down = random_hidden_states(rows, h, seed);
  HostTensor src2dst = test::random_topk_ids(tokens, k, static_cast<int>(rows), seed, 0.3);
  const HostTensor weights = test::random_f32(tokens, k, seed, 0.0f, 1.0f);
  HostTensor out(DType::kBF16, {tokens, h});
  test::poison(out);
  combine(down.view(), src2dst.view(), weights.view(), out.view());
  std::vector<double> ref(tokens * h, 0.0);
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < k; ++j) {
      const int r = src2dst.data<int>()[t * k + j];
      if (r < 0) continue;
      for (std::int64_t c = 0; c < h; ++c) {
        ref[t * h + c] += static_cast<double>(weights.data<float>()[t * k + j]) *
                          bf16_to_float(down.data<bf16>()[r * h + c]);
      }
    }
  }
  // fp32 accumulation, one bf16 rounding: within bf16's half ulp, 2^-9.
  EXPECT_LE(relative_error(out.view(), ref), 0x1p-9);
}

TEST(Combine, RejectsRowsOutsideDown) {
  const HostTensor down = test::make_bf16(2, 2, {1, 2, 3, 4});
  const HostTensor src2dst = test::make_i32(1, 1, {2});
  const HostTensor weights = test::make_f32(1, 1, {1.0f});
  HostTensor out(DType::kBF16, {1, 2});
  EXPECT_THROW(combine(down.view(), src2dst.view(), weights.view(), out.view()), InvalidArgument);
}

}  // namespace
}  // namespace moerun::cpu
