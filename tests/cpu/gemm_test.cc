#include "cpu/gemm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/metrics.h"
#include "core/scale_layout.h"
#include "core/synthetic.h"
#include "cpu/quant.h"
#include "moerun/config.h"
#include "moerun/errors.h"
#include "test_util.h"
#include "tolerances.h"

namespace moerun::cpu {
namespace {

// Operands of a grouped GEMM with random values: A [rows, K] and B [E, N, K] in `dtype`; FP8 A
// scales MN-major (core/scale_layout.h) in groups of `group_rows` rows (masked: M_max).
struct Operands {
  HostTensor a, a_scale, b, b_scale;
  ActScaleLayout a_layout{1, 1};
};

Operands random_operands(std::int64_t rows, int experts, std::int64_t n, std::int64_t k,
                         DType dtype, std::uint64_t seed, std::int64_t group_rows = 0) {
  MoeConfig shape;
  shape.hidden_size = k;
  shape.intermediate_size = n / 2;
  shape.weight_dtype = dtype;
  HostMoeWeights w = random_weights(shape, experts, seed);
  Operands o;
  o.b = std::move(w.w13);
  o.b_scale = std::move(w.w13_scale);
  const HostTensor x = random_hidden_states(rows, k, seed + 7);
  if (dtype == DType::kBF16) {
    o.a = x.clone();
  } else {
    if (group_rows == 0) group_rows = rows;
    o.a_layout = {group_rows, k / kQuantGroup};
    o.a = HostTensor(DType::kFP8E4M3, {rows, k});
    o.a_scale = group_rows == rows
                    ? HostTensor(DType::kF32, {k / kQuantGroup, rows})
                    : HostTensor(DType::kF32, {rows / group_rows, k / kQuantGroup, group_rows});
    std::vector<float> row(static_cast<std::size_t>(k));
    std::vector<float> scales(static_cast<std::size_t>(k / kQuantGroup));
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < k; ++c) row[c] = bf16_to_float(x.data<bf16>()[r * k + c]);
      quantize_row_fp8(row.data(), k, o.a.data<fp8e4m3>() + r * k, scales.data());
      for (std::int64_t kb = 0; kb < k / kQuantGroup; ++kb) {
        o.a_scale.data<float>()[o.a_layout.index(r, kb)] = scales[kb];
      }
    }
  }
  return o;
}

// Element (row, col) of B [E * N, K] (FP8: times its 128 x 128 block scale).
double weight_value(const HostTensor& t, const HostTensor& scale, std::int64_t row,
                    std::int64_t col) {
  const std::int64_t k = t.size(t.shape().ndim() - 1);
  const std::int64_t i = row * k + col;
  if (t.dtype() == DType::kBF16) return bf16_to_float(t.data<bf16>()[i]);
  const std::int64_t k_blocks = k / kQuantGroup;
  return static_cast<double>(fp8e4m3_to_float(t.data<fp8e4m3>()[i])) *
         scale.data<float>()[(row / kQuantGroup) * k_blocks + col / kQuantGroup];
}

// Element (row, col) of A [rows, K] (FP8: times its row's scale of that 128-column block).
double activation_value(const Operands& o, std::int64_t row, std::int64_t col) {
  const std::int64_t k = o.a.size(o.a.shape().ndim() - 1);
  const std::int64_t i = row * k + col;
  if (o.a.dtype() == DType::kBF16) return bf16_to_float(o.a.data<bf16>()[i]);
  return static_cast<double>(fp8e4m3_to_float(o.a.data<fp8e4m3>()[i])) *
         o.a_scale.data<float>()[o.a_layout.index(row, col / kQuantGroup)];
}

// fp64 product of the rounded operands for `rows_of_expert` rows; rows mapped to -1 stay NaN.
std::vector<double> reference(const Operands& o, const std::vector<int>& expert_of_row) {
  const std::int64_t n = o.b.size(1), k = o.b.size(2);
  std::vector<double> out(expert_of_row.size() * n, std::nan(""));
  for (std::size_t r = 0; r < expert_of_row.size(); ++r) {
    const int e = expert_of_row[r];
    if (e < 0) continue;
    for (std::int64_t c = 0; c < n; ++c) {
      double acc = 0;
      for (std::int64_t x = 0; x < k; ++x) {
        acc += activation_value(o, static_cast<std::int64_t>(r), x) *
               weight_value(o.b, o.b_scale, e * n + c, x);
      }
      out[r * n + c] = acc;
    }
  }
  return out;
}

// Checks the valid rows against the reference and that every other row kept its poison.
void expect_matches(const HostTensor& out, const std::vector<double>& ref,
                    const std::vector<int>& expert_of_row, double tolerance) {
  const std::int64_t n = out.size(out.shape().ndim() - 1);
  std::vector<double> got, want;
  for (std::size_t r = 0; r < expert_of_row.size(); ++r) {
    for (std::int64_t c = 0; c < n; ++c) {
      const float v = bf16_to_float(out.data<bf16>()[r * n + c]);
      if (expert_of_row[r] < 0) {
        ASSERT_TRUE(std::isnan(v)) << "row " << r << " holds no token and must not be written";
      } else {
        ASSERT_TRUE(std::isfinite(v)) << "row " << r << " col " << c << " not written";
        got.push_back(v);
        want.push_back(ref[r * n + c]);
      }
    }
  }
  HostTensor got_t(DType::kF32, {static_cast<std::int64_t>(got.size())});
  for (std::size_t i = 0; i < got.size(); ++i) got_t.data<float>()[i] = static_cast<float>(got[i]);
  EXPECT_LE(relative_error(got_t.view(), want), tolerance);
}

class GroupedGemm : public ::testing::TestWithParam<std::tuple<DType, int>> {};

TEST_P(GroupedGemm, MaskedMatchesFp64ForAwkwardRowCounts) {
  const auto [dtype, rows] = GetParam();
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int experts = 3;
  const std::int64_t m_max = 256, n = 256, k = 384;
  // Expert 0 gets `rows` rows, expert 1 none, expert 2 one row.
  const std::vector<int> counts = {rows, 0, 1};
  Operands o = random_operands(experts * m_max, experts, n, k, dtype, seed, m_max);
  HostTensor masked_m = test::make_i32(1, experts, counts);
  const TensorView masked_m_1d(masked_m.view().data(), DType::kI32, {experts});
  std::vector<int> expert_of_row(experts * m_max, -1);
  for (int e = 0; e < experts; ++e) {
    for (int r = 0; r < counts[e]; ++r) expert_of_row[e * m_max + r] = e;
  }
  HostTensor out(DType::kBF16, {experts, m_max, n});
  test::poison(out);
  const TensorView a3(o.a.view().data(), dtype, {experts, m_max, k});
  const TensorView s3 = o.a_scale.view();
  const auto report =
      grouped_gemm_masked({a3, s3}, {o.b.view(), o.b_scale.view()}, masked_m_1d, out.view());
  EXPECT_FALSE(report.has_value());
  expect_matches(out, reference(o, expert_of_row), expert_of_row,
                 dtype == DType::kBF16 ? test::kGemmToleranceBf16 : test::kGemmToleranceFp8);
}

TEST_P(GroupedGemm, ContiguousMatchesFp64AndSkipsPadding) {
  const auto [dtype, rows] = GetParam();
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int experts = 2;
  const std::int64_t n = 128, k = 256;
  // Expert 1's `rows` rows, padded to 128, then expert 0's 3 rows, padded.
  const std::int64_t seg1 = (rows + 127) / 128 * 128;
  std::vector<int> m_indices(seg1 + 128, -1);
  for (int r = 0; r < rows; ++r) m_indices[r] = 1;
  for (int r = 0; r < 3; ++r) m_indices[seg1 + r] = 0;
  const auto m_sum = static_cast<std::int64_t>(m_indices.size());
  Operands o = random_operands(m_sum, experts, n, k, dtype, seed);
  HostTensor idx = test::make_i32(1, m_sum, m_indices);
  HostTensor out(DType::kBF16, {m_sum, n});
  test::poison(out);
  grouped_gemm_contiguous({o.a.view(), o.a_scale.view()}, {o.b.view(), o.b_scale.view()},
                          TensorView(idx.view().data(), DType::kI32, {m_sum}), out.view());
  expect_matches(out, reference(o, m_indices), m_indices,
                 dtype == DType::kBF16 ? test::kGemmToleranceBf16 : test::kGemmToleranceFp8);
}

INSTANTIATE_TEST_SUITE_P(Rows, GroupedGemm,
                         ::testing::Combine(::testing::Values(DType::kBF16, DType::kFP8E4M3),
                                            ::testing::Values(0, 1, 127, 128, 129, 256)),
                         [](const auto& param_info) {
                           return std::string(dtype_name(std::get<0>(param_info.param))) + "_M" +
                                  std::to_string(std::get<1>(param_info.param));
                         });

TEST(GroupedGemmMasked, OverlapCountersReachThresholdForValidRowBlocksOnly) {
  const int experts = 2;
  const std::int64_t m_max = 256, n = 384, k = 128;
  Operands o = random_operands(experts * m_max, experts, n, k, DType::kBF16, 11);
  HostTensor masked_m = test::make_i32(1, experts, {65, 0});
  HostTensor out(DType::kBF16, {experts, m_max, n});
  const int block_m = 64;
  HostTensor counters = test::make_i32(1, experts * 4, std::vector<int>(8, 0));
  const OverlapSignal signal{TensorView(counters.view().data(), DType::kI32, {8}), block_m};
  const auto report = grouped_gemm_masked(
      {TensorView(o.a.view().data(), DType::kBF16, {experts, m_max, k}), {}}, {o.b.view(), {}},
      TensorView(masked_m.view().data(), DType::kI32, {experts}), out.view(), &signal);
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->block_m, block_m);
  EXPECT_EQ(report->threshold, 3);                             // 384 columns in 128-wide tiles
  const std::vector<int> expected = {3, 3, 0, 0, 0, 0, 0, 0};  // 65 rows: two row blocks of 64
  for (int i = 0; i < 8; ++i) EXPECT_EQ(counters.data<int>()[i], expected[i]) << i;
}

TEST(GroupedGemm, RejectsActivationsWhoseDtypeDiffersFromTheWeights) {
  Operands o = random_operands(128, 1, 128, 128, DType::kBF16, 3);
  Operands f = random_operands(128, 1, 128, 128, DType::kFP8E4M3, 3);
  HostTensor idx = test::make_i32(1, 128, std::vector<int>(128, 0));
  HostTensor out(DType::kBF16, {128, 128});
  try {
    grouped_gemm_contiguous({f.a.view(), f.a_scale.view()}, {o.b.view(), {}},
                            TensorView(idx.view().data(), DType::kI32, {128}), out.view());
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(
        e.what(),
        "moerun: invalid A (activations) dtype: expected bf16 (the weights' dtype), got fp8_e4m3");
  }
}

}  // namespace
}  // namespace moerun::cpu
