// CUDA grouped GEMMs vs the CPU oracle on the same permuted inputs, both layouts and dtypes.
#include "cpu/gemm.h"

#include <gtest/gtest.h>

#include <string>

#include "core/metrics.h"
#include "cpu/permute.h"
#include "cuda/gemm.h"
#include "cuda_test_util.h"
#include "cuda_tolerances.h"

namespace moerun::test {
namespace {

struct GemmCase {
  DType dtype;
  std::int64_t n, k;  // weights [E_l, N, K]
  int experts;
};

std::string case_name(const GemmCase& c, Layout layout, std::int64_t tokens, const char* routing) {
  return std::string(layout_name(layout)) + "_" + std::string(dtype_name(c.dtype)) + "_N" +
         std::to_string(c.n) + "_K" + std::to_string(c.k) + "_T" + std::to_string(tokens) + "_" +
         routing;
}

// Weights [E_l, N, K] of `dtype` (FP8 with block scales) from the synthetic generator.
HostMoeWeights make_weights(const GemmCase& c, std::uint64_t seed) {
  MoeConfig config;
  config.hidden_size = c.k;
  config.intermediate_size = c.n / 2;
  config.num_experts = c.experts;
  config.weight_dtype = c.dtype;
  return random_weights(config, c.experts, seed);  // w13 is [E, 2I = N, H = K]
}

void check_gemm(const GemmCase& c, Layout layout, std::int64_t tokens, const HostTensor& ids,
                const char* routing, bool signal = false) {
  SCOPED_TRACE(case_name(c, layout, tokens, routing));
  const std::uint64_t seed = fresh_seed();
  const HostMoeWeights w = make_weights(c, seed);
  const HostTensor hidden = random_hidden_states(tokens, c.k, seed);
  const cpu::Permuted a =
      cpu::permute(hidden.view(), ids.view(), c.experts, c.experts, c.dtype, {layout, 0, 128});
  const bool masked = layout == Layout::kMasked;
  const bool fp8 = c.dtype == DType::kFP8E4M3;
  const std::int64_t rows = a.rows();

  // Expected: the oracle's GEMM. Rows without a token are left as zeros there; compare valid rows.
  HostTensor expected(DType::kBF16, {rows, c.n});
  std::memset(expected.view().data(), 0, expected.nbytes());
  const cpu::GemmOperand b_host{w.w13.view(), w.w13_scale.view()};
  const cpu::GemmOperand a_host{a.tokens.view(), a.scales.view()};
  if (masked) {
    cpu::grouped_gemm_masked(
        a_host, b_host, a.masked_m.view(),
        TensorView(expected.view().data(), DType::kBF16, {c.experts, a.m_max, c.n}));
  } else {
    cpu::grouped_gemm_contiguous(a_host, b_host, a.m_indices.view(), expected.view());
  }

  const DeviceTensor d_a = DeviceTensor::from_host(a.tokens.view());
  const DeviceTensor d_a_scale = DeviceTensor::from_host(a.scales.view());
  const DeviceTensor d_b = DeviceTensor::from_host(w.w13.view());
  const DeviceTensor d_b_scale = DeviceTensor::from_host(w.w13_scale.view());
  const DeviceTensor d_masked_m = DeviceTensor::from_host(a.masked_m.view());
  const DeviceTensor d_m_indices = DeviceTensor::from_host(a.m_indices.view());
  DeviceTensor out(DType::kBF16, {rows, c.n});
  const cuda::GemmOperand da{d_a.view(), d_a_scale.view()}, db{d_b.view(), d_b_scale.view()};
  const std::int64_t m_blocks = masked ? a.m_max / cuda::kGemmBlockM : 0;
  DeviceTensor counters(DType::kI32, {std::max<std::int64_t>(1, c.experts * m_blocks)});
  std::optional<cuda::OverlapReport> report;
  if (masked) {
    const TensorView out3d = out.reshaped({c.experts, a.m_max, c.n});
    if (signal) {
      MOERUN_CUDA_CHECK(cudaMemset(counters.view().data(), 0, counters.view().nbytes()));
      const cuda::OverlapSignal s{counters.reshaped({c.experts * m_blocks}), cuda::kGemmBlockM};
      report = cuda::grouped_gemm_masked(da, db, d_masked_m.view(), out3d, &s, nullptr);
      EXPECT_TRUE(report.has_value());
    } else {
      report = cuda::grouped_gemm_masked(da, db, d_masked_m.view(), out3d, nullptr, nullptr);
      EXPECT_FALSE(report.has_value()) << "a report without a signal";
    }
  } else {
    cuda::grouped_gemm_contiguous(da, db, d_m_indices.view(), out.view(), nullptr);
  }
  const HostTensor got = out.to_host();

  // Valid rows vs the oracle; the others never written.
  std::vector<double> got_valid, want_valid;
  int written_empty_rows = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const bool valid = masked ? (r % a.m_max) < a.masked_m.data<int>()[r / a.m_max]
                              : a.m_indices.data<int>()[r] >= 0;
    if (!valid) {
      written_empty_rows += !row_poisoned(got, r, c.n);
      continue;
    }
    for (std::int64_t j = 0; j < c.n; ++j) {
      got_valid.push_back(bf16_to_float(got.data<bf16>()[r * c.n + j]));
      want_valid.push_back(bf16_to_float(expected.data<bf16>()[r * c.n + j]));
    }
  }
  EXPECT_EQ(written_empty_rows, 0);
  HostTensor got_f32(DType::kF32, {static_cast<std::int64_t>(got_valid.size())});
  for (std::size_t i = 0; i < got_valid.size(); ++i)
    got_f32.data<float>()[i] = static_cast<float>(got_valid[i]);
  const double error = relative_error(got_f32.view(), want_valid);
  EXPECT_LE(error, fp8 ? kGemmToleranceFp8 : kGemmToleranceBf16);

  if (signal) {
    ASSERT_TRUE(report.has_value());
    EXPECT_EQ(report->block_m, cuda::kGemmBlockM);
    EXPECT_EQ(report->threshold, (c.n + cuda::kGemmBlockN - 1) / cuda::kGemmBlockN);
    const HostTensor got_counters = counters.to_host();
    for (int e = 0; e < c.experts; ++e) {
      const int blocks_used =
          (a.masked_m.data<int>()[e] + cuda::kGemmBlockM - 1) / cuda::kGemmBlockM;
      for (std::int64_t b = 0; b < m_blocks; ++b) {
        EXPECT_EQ(got_counters.data<int>()[e * m_blocks + b],
                  b < blocks_used ? report->threshold : 0)
            << "expert " << e << " row block " << b;
      }
    }
  }

  // Deterministic: a second run gives the same bits.
  if (masked) {
    cuda::grouped_gemm_masked(da, db, d_masked_m.view(), out.reshaped({c.experts, a.m_max, c.n}),
                              nullptr, nullptr);
  } else {
    cuda::grouped_gemm_contiguous(da, db, d_m_indices.view(), out.view(), nullptr);
  }
  const HostTensor again = out.to_host();
  EXPECT_EQ(std::memcmp(again.view().data(), got.view().data(), got.nbytes()), 0)
      << "not deterministic";
}

const GemmCase kCases[] = {
    {DType::kFP8E4M3, 512, 384, 6},  // gate-up-like, K not a multiple of 256
    {DType::kFP8E4M3, 384, 256, 6},  // down-like
    {DType::kBF16, 264, 200, 5},     // N and K not tile multiples
    {DType::kBF16, 256, 512, 4},
};

TEST(CudaGroupedGemm, MatchesOracle) {
  MOERUN_REQUIRE_GPU();
  for (const GemmCase& c : kCases) {
    for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
      for (std::int64_t tokens : {1, 127, 129, 300}) {
        const HostTensor ids = random_local_ids(tokens, 3, c.experts, 0.2, tokens * 7 + 1);
        check_gemm(c, layout, tokens, ids, "random");
      }
    }
  }
}

TEST(CudaGroupedGemm, AwkwardRouting) {
  MOERUN_REQUIRE_GPU();
  const GemmCase& c = kCases[0];
  for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
    // Every token to local expert 0, T = M_max = 128: masked_m[0] == M_max.
    HostTensor zero(DType::kI32, {128, 2});
    for (int t = 0; t < 128; ++t) {
      zero.data<int>()[2 * t] = 0;
      zero.data<int>()[2 * t + 1] = -1;
    }
    check_gemm(c, layout, 128, zero, "all_to_expert_0");
    // Everything skipped: no row is computed, nothing is written.
    HostTensor none(DType::kI32, {33, 2});
    for (int i = 0; i < 66; ++i) none.data<int>()[i] = -1;
    check_gemm(c, layout, 33, none, "all_skipped");
  }
}

TEST(CudaGroupedGemm, OverlapCounters) {
  MOERUN_REQUIRE_GPU();
  for (const GemmCase& c : {kCases[1], kCases[2]}) {
    const HostTensor ids = random_local_ids(200, 3, c.experts, 0.1, 5);
    check_gemm(c, Layout::kMasked, 200, ids, "random", /*signal=*/true);
  }
}

}  // namespace
}  // namespace moerun::test
