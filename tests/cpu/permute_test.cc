#include "cpu/permute.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/scale_layout.h"
#include "core/synthetic.h"
#include "cpu/quant.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun::cpu {
namespace {

PermuteOptions masked(std::int64_t m_max = 0) { return {Layout::kMasked, m_max, 128}; }
PermuteOptions contiguous(std::int64_t alignment = 128) {
  return {Layout::kContiguous, 0, alignment};
}

bool same_row(const HostTensor& tokens, std::int64_t row, const HostTensor& hidden,
              std::int64_t t) {
  const std::int64_t h = hidden.size(1);
  return std::memcmp(tokens.data<bf16>() + row * h, hidden.data<bf16>() + t * h, h * 2) == 0;
}

TEST(Permute, MaskedHandChecked) {
  const HostTensor hidden = random_hidden_states(3, 16, 1);
  const HostTensor ids = test::make_i32(3, 2, {0, 1, 1, -1, 0, 1});
  const Permuted p = permute(hidden.view(), ids.view(), 2, 4, DType::kBF16, masked());
  EXPECT_EQ(p.m_max, 128);
  EXPECT_EQ(p.expected_m, 2);  // ceil(3 * 2 / 4) with the global E = 4
  ASSERT_EQ(p.tokens.shape(), Shape({2, 128, 16}));
  EXPECT_EQ(p.masked_m.data<int>()[0], 2);
  EXPECT_EQ(p.masked_m.data<int>()[1], 3);
  const std::vector<int> src2dst = {0, 128, 129, -1, 1, 130};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(p.src2dst.data<int>()[i], src2dst[i]) << i;
  EXPECT_FALSE(p.scales.defined());
  EXPECT_TRUE(same_row(p.tokens, 0, hidden, 0));
  EXPECT_TRUE(same_row(p.tokens, 1, hidden, 2));
  EXPECT_TRUE(same_row(p.tokens, 128, hidden, 0));
  EXPECT_TRUE(same_row(p.tokens, 129, hidden, 1));
  EXPECT_TRUE(same_row(p.tokens, 130, hidden, 2));
}

TEST(Permute, ContiguousPadsEachExpertToTheAlignment) {
  const std::int64_t tokens = 200;
  const HostTensor hidden = random_hidden_states(tokens, 8, 2);
  // Expert 0: every token (200 rows -> 256); expert 1: none; expert 2: tokens 0..128 (129 -> 256);
  // expert 3: token 5 only (1 -> 128).
  std::vector<int> ids;
  for (int t = 0; t < tokens; ++t) {
    ids.push_back(0);
    ids.push_back(t <= 128 ? 2 : -1);
    ids.push_back(t == 5 ? 3 : -1);
  }
  const HostTensor topk = test::make_i32(tokens, 3, ids);
  const Permuted p = permute(hidden.view(), topk.view(), 4, 4, DType::kBF16, contiguous());
  EXPECT_EQ(p.m_sum, 256 + 0 + 256 + 128);
  const int* m = p.m_indices.data<int>();
  for (int r = 0; r < 200; ++r) EXPECT_EQ(m[r], 0);
  for (int r = 200; r < 256; ++r) EXPECT_EQ(m[r], -1) << r;
  for (int r = 256; r < 385; ++r) EXPECT_EQ(m[r], 2);
  for (int r = 385; r < 512; ++r) EXPECT_EQ(m[r], -1);
  EXPECT_EQ(m[512], 3);
  for (int r = 513; r < 640; ++r) EXPECT_EQ(m[r], -1);
  EXPECT_EQ(p.src2dst.data<int>()[5 * 3 + 2], 512);
  EXPECT_EQ(p.src2dst.data<int>()[128 * 3 + 1], 256 + 128);
  EXPECT_EQ(p.src2dst.data<int>()[129 * 3 + 1], -1);
  EXPECT_TRUE(same_row(p.tokens, 512, hidden, 5));
}

TEST(Permute, ContiguousAlignment64WastesLess) {
  const HostTensor hidden = random_hidden_states(3, 8, 3);
  const HostTensor ids = test::make_i32(3, 1, {0, 1, 0});
  EXPECT_EQ(permute(hidden.view(), ids.view(), 2, 2, DType::kBF16, contiguous(64)).m_sum, 128);
  EXPECT_EQ(permute(hidden.view(), ids.view(), 2, 2, DType::kBF16, contiguous(128)).m_sum, 256);
  EXPECT_THROW(permute(hidden.view(), ids.view(), 2, 2, DType::kBF16, contiguous(32)),
               InvalidArgument);
}

TEST(Permute, RandomRoutingKeepsTokenOrderAndContent) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::int64_t tokens = 300, h = 32;
  const int experts = 16, k = 4;
  const HostTensor hidden = random_hidden_states(tokens, h, seed);
  const HostTensor ids = test::random_topk_ids(tokens, k, experts, seed, 0.2);
  for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
    const Permuted p =
        permute(hidden.view(), ids.view(), experts, experts, DType::kBF16, {layout, 0, 128});
    std::vector<int> last_token(experts, -1), seen(experts, 0);
    for (std::int64_t t = 0; t < tokens; ++t) {
      for (int j = 0; j < k; ++j) {
        const int e = ids.data<int>()[t * k + j];
        const int row = p.src2dst.data<int>()[t * k + j];
        if (e < 0) {
          EXPECT_EQ(row, -1);
          continue;
        }
        ++seen[e];
        EXPECT_TRUE(same_row(p.tokens, row, hidden, t));
        if (layout == Layout::kMasked) {
          EXPECT_EQ(row / p.m_max, e);
          EXPECT_EQ(row % p.m_max, seen[e] - 1) << "rows of an expert keep token order";
        } else {
          EXPECT_EQ(p.m_indices.data<int>()[row], e);
        }
        EXPECT_GT(t, last_token[e]);
        last_token[e] = static_cast<int>(t);
      }
    }
    for (int e = 0; e < experts; ++e) EXPECT_EQ(p.masked_m.data<int>()[e], seen[e]);
  }
}

TEST(Permute, Fp8RowsAreTheQuantizedTokens) {
  const auto seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HostTensor hidden = random_hidden_states(5, 256, seed);
  const HostTensor ids = test::make_i32(5, 2, {0, 1, 1, 0, 0, -1, -1, 1, 1, 0});
  const Permuted p = permute(hidden.view(), ids.view(), 2, 2, DType::kFP8E4M3, masked());
  ASSERT_EQ(p.tokens.dtype(), DType::kFP8E4M3);
  ASSERT_EQ(p.scales.shape(), Shape({2, 2, 128}));  // [E_l, H / 128, M_max]: MN-major
  for (int t = 0; t < 5; ++t) {
    std::vector<float> values(256);
    for (int c = 0; c < 256; ++c) values[c] = bf16_to_float(hidden.data<bf16>()[t * 256 + c]);
    std::vector<fp8e4m3> codes(256);
    float scales[2];
    quantize_row_fp8(values.data(), 256, codes.data(), scales);
    for (int j = 0; j < 2; ++j) {
      const int row = p.src2dst.data<int>()[t * 2 + j];
      if (row < 0) continue;
      EXPECT_EQ(std::memcmp(p.tokens.data<fp8e4m3>() + row * 256, codes.data(), 256), 0);
      const ActScaleLayout layout{p.m_max, 2};
      EXPECT_EQ(p.scales.data<float>()[layout.index(row, 0)], scales[0]);
      EXPECT_EQ(p.scales.data<float>()[layout.index(row, 1)], scales[1]);
    }
  }
}

TEST(Permute, MaskedMMaxMustHoldAllTokensAndBeAligned) {
  const HostTensor hidden = random_hidden_states(129, 8, 4);
  const HostTensor ids = test::random_topk_ids(129, 1, 2, 4);
  EXPECT_EQ(permute(hidden.view(), ids.view(), 2, 2, DType::kBF16, masked()).m_max, 256);
  EXPECT_THROW(permute(hidden.view(), ids.view(), 2, 2, DType::kBF16, masked(128)),
               InvalidArgument);
  EXPECT_THROW(permute(hidden.view(), ids.view(), 2, 2, DType::kBF16, masked(300)),
               InvalidArgument);
}

TEST(Permute, AllSkippedAndZeroTokens) {
  const HostTensor hidden = random_hidden_states(4, 8, 5);
  const HostTensor ids = test::make_i32(4, 2, std::vector<int>(8, -1));
  const Permuted p = permute(hidden.view(), ids.view(), 3, 3, DType::kBF16, contiguous());
  EXPECT_EQ(p.m_sum, 0);
  for (int e = 0; e < 3; ++e) EXPECT_EQ(p.masked_m.data<int>()[e], 0);
  const HostTensor none = random_hidden_states(0, 8, 6);
  const HostTensor no_ids(DType::kI32, {0, 2});
  const Permuted q = permute(none.view(), no_ids.view(), 3, 3, DType::kBF16, masked());
  EXPECT_EQ(q.m_max, 128);
  EXPECT_EQ(q.expected_m, 0);
}

}  // namespace
}  // namespace moerun::cpu
