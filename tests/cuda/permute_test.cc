// CUDA permute + quantize vs the CPU oracle: layouts, src2dst, masked_m, m_indices and every
// written byte equal; rows the layout leaves empty never written.
#include "cpu/permute.h"

#include <gtest/gtest.h>

#include <string>

#include "cuda/permute.h"
#include "cuda_test_util.h"

namespace moerun::test {
namespace {

enum class Routing { kRandom, kOneExpert, kLocalExpertZero, kAllSkipped };

const char* routing_name(Routing r) {
  switch (r) {
    case Routing::kRandom:
      return "random";
    case Routing::kOneExpert:
      return "one_expert";
    case Routing::kLocalExpertZero:
      return "local_expert_0";
    case Routing::kAllSkipped:
      return "all_skipped";
  }
  return "?";
}

HostTensor make_ids(Routing routing, std::int64_t tokens, int k, int experts, std::uint64_t seed) {
  HostTensor ids = random_local_ids(tokens, k, experts, 0.15, seed);
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < k; ++j) {
      int& id = ids.data<int>()[t * k + j];
      switch (routing) {
        case Routing::kRandom:
          break;
        case Routing::kOneExpert:
          id = j == k - 1 ? experts - 1 : -1;
          break;
        case Routing::kLocalExpertZero:
          id = j == 0 ? 0 : -1;
          break;
        case Routing::kAllSkipped:
          id = -1;
          break;
      }
    }
  }
  return ids;
}

void check_permute(Layout layout, DType dtype, std::int64_t tokens, Routing routing) {
  constexpr int kExperts = 16, kTopK = 6;
  const std::int64_t h = dtype == DType::kFP8E4M3 ? 512 : 200;
  SCOPED_TRACE(std::string(layout_name(layout)) + ", " + std::string(dtype_name(dtype)) + ", T " +
               std::to_string(tokens) + ", " + routing_name(routing));
  const std::uint64_t seed = fresh_seed();
  HostTensor hidden = random_hidden_states(tokens, h, seed);
  if (tokens > 2) {
    // An all-zero token (the amax floor) and a large one.
    for (std::int64_t c = 0; c < h; ++c) {
      hidden.data<bf16>()[c] = bf16{0};
      hidden.data<bf16>()[h + c] =
          float_to_bf16(3000.0f * bf16_to_float(hidden.data<bf16>()[h + c]));
    }
  }
  const HostTensor ids = make_ids(routing, tokens, kTopK, kExperts, seed);
  const cpu::Permuted expected =
      cpu::permute(hidden.view(), ids.view(), kExperts, 4 * kExperts, dtype, {layout, 0, 128});

  const bool fp8 = dtype == DType::kFP8E4M3;
  const bool masked = layout == Layout::kMasked;
  const std::int64_t rows =
      masked ? kExperts * expected.m_max : cuda::contiguous_capacity(tokens, kTopK, kExperts);
  DeviceTensor d_tokens =
      masked ? DeviceTensor(dtype, {kExperts, expected.m_max, h}) : DeviceTensor(dtype, {rows, h});
  DeviceTensor d_scales;
  if (fp8) {  // MN-major (core/scale_layout.h)
    d_scales = masked ? DeviceTensor(DType::kF32, {kExperts, h / 128, expected.m_max})
                      : DeviceTensor(DType::kF32, {h / 128, rows});
  }
  const ActScaleLayout scale_layout{masked ? expected.m_max : rows, h / 128};
  const ActScaleLayout expected_layout{masked ? expected.m_max : expected.m_sum, h / 128};
  DeviceTensor d_masked_m(DType::kI32, {kExperts}), d_src2dst(DType::kI32, {tokens, kTopK});
  DeviceTensor d_m_indices(DType::kI32, {rows}), d_m_sum(DType::kI32, {1});
  const std::size_t ws_bytes = cuda::permute_workspace_bytes(tokens, kTopK, kExperts);
  DeviceTensor ws(DType::kI32, {static_cast<std::int64_t>(ws_bytes / 4)});

  cuda::PermuteOutputs out;
  out.layout = layout;
  out.tokens = d_tokens.view();
  if (fp8) {
    out.scales = d_scales.view();
  }
  out.masked_m = d_masked_m.view();
  if (!masked) {
    out.m_indices = d_m_indices.view();
    out.m_sum = d_m_sum.view();
  }
  out.src2dst = d_src2dst.view();
  const DeviceTensor d_hidden = DeviceTensor::from_host(hidden.view());
  const DeviceTensor d_ids = DeviceTensor::from_host(ids.view());
  cuda::permute(d_hidden.view(), d_ids.view(), kExperts, dtype, out, ws.view().data(), ws_bytes,
                nullptr);

  const HostTensor masked_m = d_masked_m.to_host(), src2dst = d_src2dst.to_host();
  EXPECT_EQ(std::memcmp(masked_m.view().data(), expected.masked_m.view().data(), masked_m.nbytes()),
            0);
  EXPECT_EQ(std::memcmp(src2dst.view().data(), expected.src2dst.view().data(), src2dst.nbytes()),
            0);
  std::vector<char> valid(static_cast<std::size_t>(rows), 0);
  if (masked) {
    for (int e = 0; e < kExperts; ++e) {
      for (int r = 0; r < expected.masked_m.data<int>()[e]; ++r) valid[e * expected.m_max + r] = 1;
    }
  } else {
    const HostTensor m_indices = d_m_indices.to_host(), m_sum = d_m_sum.to_host();
    EXPECT_EQ(m_sum.data<int>()[0], expected.m_sum);
    int mismatches = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const int want = r < expected.m_sum ? expected.m_indices.data<int>()[r] : -1;
      mismatches += m_indices.data<int>()[r] != want;
      valid[r] = want >= 0;
    }
    EXPECT_EQ(mismatches, 0) << "m_indices";
  }
  const HostTensor got_tokens = d_tokens.to_host();
  const HostTensor got_scales = fp8 ? d_scales.to_host() : HostTensor();
  int row_mismatches = 0, written_empty_rows = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (valid[r]) {
      row_mismatches += !same_row(got_tokens, expected.tokens, r, h);
      if (fp8) {
        row_mismatches +=
            !same_scale_row(got_scales, scale_layout, expected.scales, expected_layout, r);
      }
    } else {
      written_empty_rows += !row_poisoned(got_tokens, r, h);
      if (fp8) written_empty_rows += !scale_row_poisoned(got_scales, scale_layout, r);
    }
  }
  EXPECT_EQ(row_mismatches, 0) << "rows differing from the oracle (tokens or scales)";
  EXPECT_EQ(written_empty_rows, 0) << "rows without a token that were written";
}

TEST(CudaPermute, MatchesOracleBitwise) {
  MOERUN_REQUIRE_GPU();
  for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
    for (DType dtype : {DType::kFP8E4M3, DType::kBF16}) {
      for (std::int64_t tokens : {0, 1, 127, 128, 129, 1000}) {
        check_permute(layout, dtype, tokens, Routing::kRandom);
      }
      for (Routing routing :
           {Routing::kOneExpert, Routing::kLocalExpertZero, Routing::kAllSkipped}) {
        check_permute(layout, dtype, 129, routing);
      }
      // Every token to local expert 0 with T = M_max: masked_m[0] == M_max.
      check_permute(layout, dtype, 128, Routing::kLocalExpertZero);
    }
  }
}

TEST(CudaPermute, LargeBatchManyChunks) {
  MOERUN_REQUIRE_GPU();
  check_permute(Layout::kContiguous, DType::kFP8E4M3, 4097, Routing::kRandom);
  check_permute(Layout::kMasked, DType::kBF16, 4097, Routing::kRandom);
}

}  // namespace
}  // namespace moerun::test
