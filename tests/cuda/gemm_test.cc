// CUDA grouped GEMMs vs the CPU oracle on the same permuted inputs, both layouts and dtypes, every
// tile shape the heuristic can pick. The issue-4 benchmark is `moerun bench-gemm` (tools/).
#include "cpu/gemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/scale_layout.h"
#include "cpu/permute.h"
#include "cuda/gemm.h"
#include "cuda/gemm_heuristics.h"
#include "cuda_test_util.h"
#include "moerun/errors.h"
#include "tolerances.h"

namespace moerun::test {
namespace {

using sm90_variant_t = cuda::sm90::GemmVariant;

struct GemmCase {
  DType dtype;
  std::int64_t n, k;  // weights [E_l, N, K]
  int experts;
};

std::string case_name(const GemmCase& c, Layout layout, std::int64_t tokens, const char* routing,
                      std::int64_t expected_m) {
  return std::string(layout_name(layout)) + "_" + std::string(dtype_name(c.dtype)) + "_N" +
         std::to_string(c.n) + "_K" + std::to_string(c.k) + "_T" + std::to_string(tokens) + "_" +
         routing + (expected_m > 0 ? "_expected_m" + std::to_string(expected_m) : "");
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

bool row_valid(const cpu::Permuted& a, std::int64_t r) {
  return a.layout == Layout::kMasked ? (r % a.m_max) < a.masked_m.data<int>()[r / a.m_max]
                                     : a.m_indices.data<int>()[r] >= 0;
}

// Rows that hold no token get NaN bytes (0xFF), scales too: the GEMM must never let them reach a
// stored result.
void poison_invalid_rows(cpu::Permuted& a, std::int64_t k) {
  const std::int64_t rows = a.rows();
  const std::size_t row_bytes = static_cast<std::size_t>(k) * dtype_size(a.tokens.dtype());
  for (std::int64_t r = 0; r < rows; ++r) {
    if (row_valid(a, r)) continue;
    std::memset(static_cast<std::uint8_t*>(a.tokens.view().data()) + r * row_bytes, kPoison,
                row_bytes);
    if (a.scales.numel() > 0) {  // MN-major (core/scale_layout.h)
      const ActScaleLayout layout{a.layout == Layout::kMasked ? a.m_max : rows, k / kQuantGroup};
      for (std::int64_t kb = 0; kb < layout.k_blocks; ++kb) {
        std::memset(a.scales.data<float>() + layout.index(r, kb), kPoison, sizeof(float));
      }
    }
  }
}

int device_sm_count() {
  int device = 0, sms = 0;
  MOERUN_CUDA_CHECK(cudaGetDevice(&device));
  MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

struct GemmResult {
  cpu::Permuted a;
  HostTensor got;  // [rows, N] bf16
};

// Runs the GEMM of one layout on permuted random tokens and checks it: valid rows vs the oracle,
// other rows never written, overlap counters (masked, `signal`), determinism (a second run).
GemmResult check_gemm(const GemmCase& c, Layout layout, std::int64_t tokens, const HostTensor& ids,
                      const char* routing, bool signal = false, std::int64_t expected_m = 0,
                      std::uint64_t seed = 0) {
  SCOPED_TRACE(case_name(c, layout, tokens, routing, expected_m));
  if (seed == 0) seed = fresh_seed();
  const HostMoeWeights w = make_weights(c, seed);
  const HostTensor hidden = random_hidden_states(tokens, c.k, seed);
  cpu::Permuted a =
      cpu::permute(hidden.view(), ids.view(), c.experts, c.experts, c.dtype, {layout, 0, 128});
  poison_invalid_rows(a, c.k);
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
  auto run = [&](bool with_signal) {
    if (masked) {
      const TensorView out3d = out.reshaped({c.experts, a.m_max, c.n});
      if (with_signal) {
        MOERUN_CUDA_CHECK(cudaMemset(counters.view().data(), 0, counters.view().nbytes()));
        // All SMs but two reserved: a grid of two CTAs walks every tile (the bits must equal
        // the full grid's of the run without a signal below).
        const cuda::OverlapSignal s{counters.reshaped({c.experts * m_blocks}), cuda::kGemmBlockM,
                                    device_sm_count() - 2};
        report =
            cuda::grouped_gemm_masked(da, db, d_masked_m.view(), out3d, &s, nullptr, expected_m);
        EXPECT_TRUE(report.has_value());
      } else {
        report = cuda::grouped_gemm_masked(da, db, d_masked_m.view(), out3d, nullptr, nullptr,
                                           expected_m);
        EXPECT_FALSE(report.has_value()) << "a report without a signal";
      }
    } else {
      cuda::grouped_gemm_contiguous(da, db, d_m_indices.view(), out.view(), nullptr);
    }
  };
  run(signal);
  HostTensor got = out.to_host();

  // Valid rows vs the oracle; the others never written.
  std::vector<double> got_valid, want_valid;
  int written_empty_rows = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!row_valid(a, r)) {
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
  EXPECT_LE(error, fp8 ? kGemmVsOracleFp8 : kGemmVsOracleBf16);

  if (signal) {
    EXPECT_TRUE(report.has_value());
    if (report) {
      EXPECT_EQ(report->block_m, cuda::kGemmBlockM);
      // One count per N tile of the variant that ran.
      const int block_n =
          cuda::sm90::variant_shape(
              cuda::grouped_gemm_masked_variant(fp8, c.experts, a.m_max, c.n, c.k, expected_m)
                  .variant)
              .block_n;
      EXPECT_EQ(report->threshold, (c.n + block_n - 1) / block_n);
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
  }

  // Deterministic: a second run gives the same bits.
  run(false);
  const HostTensor again = out.to_host();
  EXPECT_EQ(std::memcmp(again.view().data(), got.view().data(), got.nbytes()), 0)
      << "not deterministic";
  return {std::move(a), std::move(got)};
}

// Forces one kernel variant for the scope (tests every tile shape the heuristic can pick).
class ForcedVariant {
 public:
  explicit ForcedVariant(sm90_variant_t v) {
    cuda::force_gemm_variant_for_testing(static_cast<int>(v));
  }
  ~ForcedVariant() { cuda::force_gemm_variant_for_testing(-1); }
  ForcedVariant(const ForcedVariant&) = delete;
  ForcedVariant& operator=(const ForcedVariant&) = delete;
};

std::vector<sm90_variant_t> variants_of(DType dtype) {
  std::vector<sm90_variant_t> out;
  for (int v = 0; v < cuda::sm90::kNumGemmVariants; ++v) {
    const auto variant = static_cast<sm90_variant_t>(v);
    if (cuda::sm90::variant_shape(variant).fp8 == (dtype == DType::kFP8E4M3))
      out.push_back(variant);
  }
  return out;
}

std::string variant_name(sm90_variant_t v) { return cuda::gemm_variant_name(v); }

// ids [T, 1] sending counts[e] consecutive tokens to expert e (exact rows per group).
HostTensor ids_with_counts(const std::vector<int>& counts) {
  std::int64_t tokens = 0;
  for (int c : counts) tokens += c;
  HostTensor ids(DType::kI32, {tokens, 1});
  std::int64_t t = 0;
  for (std::size_t e = 0; e < counts.size(); ++e) {
    for (int i = 0; i < counts[e]; ++i) ids.data<int>()[t++] = static_cast<int>(e);
  }
  return ids;
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

// Rows per group 0, 1, 127, 128, 129, 300 (and the rest of M_max), in both layouts, with every
// kernel variant (tile shape) of the dtype.
TEST(CudaGroupedGemm, GroupSizes) {
  MOERUN_REQUIRE_GPU();
  const std::vector<int> counts = {0, 1, 127, 128, 129, 300};
  const HostTensor ids = ids_with_counts(counts);
  for (GemmCase c : kCases) {
    c.experts = static_cast<int>(counts.size());
    for (sm90_variant_t v : variants_of(c.dtype)) {
      SCOPED_TRACE(variant_name(v));
      const ForcedVariant forced(v);
      for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
        check_gemm(c, layout, ids.size(0), ids, "sizes_0_1_127_128_129_300");
      }
    }
  }
}

// A row's results depend neither on the tile shape nor on the layout: the valid rows of every
// variant's masked and contiguous outputs agree bit for bit.
TEST(CudaGroupedGemm, TileShapesAndLayoutsAgreeBitwise) {
  MOERUN_REQUIRE_GPU();
  const std::vector<int> counts = {3, 0, 64, 65, 200, 1};
  const HostTensor ids = ids_with_counts(counts);
  for (GemmCase c : kCases) {
    c.experts = static_cast<int>(counts.size());
    const std::uint64_t seed = fresh_seed();
    std::vector<GemmResult> masked, contiguous;
    std::vector<std::string> names;
    for (sm90_variant_t v : variants_of(c.dtype)) {
      // Contiguous tile orders too: the heuristic's bands, and bands of 4 row blocks (the last one
      // partly past the used row blocks).
      for (int raster : {0, 4}) {
        const ForcedVariant forced(v);
        cuda::force_gemm_raster_rows_for_testing(raster);
        names.push_back(variant_name(v) + (raster > 0 ? " bands of 4" : ""));
        masked.push_back(
            check_gemm(c, Layout::kMasked, ids.size(0), ids, "bitwise", false, 0, seed));
        contiguous.push_back(
            check_gemm(c, Layout::kContiguous, ids.size(0), ids, "bitwise", false, 0, seed));
        cuda::force_gemm_raster_rows_for_testing(0);
      }
    }
    const GemmResult& ref = masked[0];
    for (std::size_t i = 0; i < names.size(); ++i) {
      SCOPED_TRACE(case_name(c, Layout::kMasked, ids.size(0), "bitwise", 0) + " " + names[i] +
                   " vs " + names[0]);
      // Masked row (e, i) is contiguous row segment_start[e] + i (segments in expert order).
      std::int64_t mismatched_masked = 0, mismatched_contiguous = 0, segment = 0;
      const std::size_t bytes = static_cast<std::size_t>(c.n) * 2;
      for (int e = 0; e < c.experts; ++e) {
        for (int r = 0; r < counts[e]; ++r) {
          const std::int64_t row = e * ref.a.m_max + r;
          mismatched_masked += !same_row(ref.got, masked[i].got, row, c.n);
          mismatched_contiguous +=
              std::memcmp(element_bytes(ref.got, row * c.n),
                          element_bytes(contiguous[i].got, (segment + r) * c.n), bytes) != 0;
        }
        segment += (counts[e] + 127) / 128 * 128;
      }
      EXPECT_EQ(mismatched_masked, 0) << "masked rows differ";
      EXPECT_EQ(mismatched_contiguous, 0) << "contiguous rows differ";
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
    for (std::int64_t expected_m : {0, 1}) {  // 128-row and 64-row tiles
      check_gemm(c, Layout::kMasked, 200, ids, "random", /*signal=*/true, expected_m);
    }
    for (sm90_variant_t v : variants_of(c.dtype)) {
      SCOPED_TRACE(variant_name(v));
      const ForcedVariant forced(v);
      check_gemm(c, Layout::kMasked, 200, ids, "random", /*signal=*/true);
    }
  }
}

// An SM reservation outside 0 .. SMs - 1 is refused by name, before anything is launched.
TEST(CudaGroupedGemm, OverlapReservedSmsOutOfRange) {
  MOERUN_REQUIRE_GPU();
  const std::int64_t experts = 1, m_max = 128, n = 128, k = 128;
  const DeviceTensor a(DType::kBF16, {experts, m_max, k}), b(DType::kBF16, {experts, n, k});
  const DeviceTensor masked_m(DType::kI32, {experts}), out(DType::kBF16, {experts, m_max, n});
  const DeviceTensor counters(DType::kI32, {experts * (m_max / cuda::kGemmBlockM)});
  const int sms = device_sm_count();
  for (int reserved : {-1, sms, sms + 7}) {
    SCOPED_TRACE(reserved);
    const cuda::OverlapSignal s{counters.view(), cuda::kGemmBlockM, reserved};
    const std::string message = error_of([&] {
      cuda::grouped_gemm_masked({a.view(), {}}, {b.view(), {}}, masked_m.view(), out.view(), &s,
                                nullptr);
    });
    EXPECT_CONTAINS(message, "overlap reserved_sms");
    EXPECT_CONTAINS(message, "0 .. " + std::to_string(sms - 1));
  }
  EXPECT_TRUE(row_poisoned(out.to_host(), 0, n)) << "nothing written";
}

}  // namespace
}  // namespace moerun::test
