// The host finiteness checks: the first bad element in index order for each dtype, scales that
// must be > 0, and the messages' index and value text.
#include "core/checks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "moerun/errors.h"
#include "moerun/host_tensor.h"
#include "test_util.h"

namespace moerun::detail {
namespace {

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// 300000 elements: more than one parallel chunk, so the minimum over chunks is exercised.
constexpr std::int64_t kRows = 600, kCols = 500;

TEST(FiniteCheck, FindsTheFirstBadElementOfEachDtype) {
  const auto seed = test::fresh_seed();
  std::mt19937_64 rng(seed);
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kFP8E4M3}) {
    SCOPED_TRACE(dtype_name(dtype));
    HostTensor t(dtype, {kRows, kCols});
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      // Large, tiny and negative finite values, never bad (FP8 saturates the large ones).
      const float v = (i % 3 == 0 ? 3e38f : i % 3 == 1 ? 1e-40f : -448.0f);
      if (dtype == DType::kBF16) t.data<bf16>()[i] = float_to_bf16(v);
      if (dtype == DType::kF32) t.data<float>()[i] = v;
      if (dtype == DType::kFP8E4M3) t.data<fp8e4m3>()[i] = float_to_fp8e4m3(v);
    }
    EXPECT_EQ(first_non_finite(t.view()), std::nullopt);
    const std::int64_t first = static_cast<std::int64_t>(rng() % (t.numel() / 2));
    const std::int64_t later = t.numel() / 2 + static_cast<std::int64_t>(rng() % (t.numel() / 2));
    for (std::int64_t i : {later, first}) {
      if (dtype == DType::kBF16) t.data<bf16>()[i] = float_to_bf16(i == first ? -kInf : kNan);
      if (dtype == DType::kF32) t.data<float>()[i] = i == first ? kInf : kNan;
      if (dtype == DType::kFP8E4M3) t.data<fp8e4m3>()[i] = fp8e4m3{0xff};
    }
    EXPECT_EQ(first_non_finite(t.view()), first);
    EXPECT_EQ(first_non_finite(t.view(), /*parallel=*/false), first);
  }
}

TEST(FiniteCheck, ScalesMustBeFiniteAndPositive) {
  HostTensor s(DType::kF32, {4, 3});
  for (std::int64_t i = 0; i < 12; ++i) s.data<float>()[i] = 1e-45f;  // subnormal: still > 0
  EXPECT_EQ(first_bad_scale(s.view()), std::nullopt);
  for (float bad : {0.0f, -0.0f, -1.0f, kNan, kInf}) {
    s.data<float>()[7] = bad;
    EXPECT_EQ(first_bad_scale(s.view()), 7) << bad;
  }
  EXPECT_EQ(test::error_of([&] { check_scales(s.view(), "w2_scale"); }),
            "moerun: invalid w2_scale[2, 1]: expected a finite value > 0 (an FP8 block scale), "
            "got inf");
}

TEST(FiniteCheck, MessagesNameTheElementAndItsValue) {
  EXPECT_EQ(index_text({2, 3, 4}, 23), "[1, 2, 3]");
  EXPECT_EQ(index_text({5}, 4), "[4]");
  HostTensor t(DType::kF32, {2, 2});
  t.data<float>()[0] = 1.0f;
  t.data<float>()[1] = -2.5f;
  t.data<float>()[2] = -kInf;
  t.data<float>()[3] = -kNan;
  EXPECT_EQ(value_text(t.view(), 1), "-2.5");
  EXPECT_EQ(value_text(t.view(), 2), "-inf");
  EXPECT_EQ(value_text(t.view(), 3), "nan") << "never '-nan'";
  EXPECT_EQ(test::error_of([&] { check_finite(t.view(), "router_logits"); }),
            "moerun: invalid router_logits[1, 0]: expected a finite value, got -inf");
}

}  // namespace
}  // namespace moerun::detail
