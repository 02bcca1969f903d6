// The expert-parallel oracles: placements, the all-to-all dispatch layout, and both backends
// against the single-rank layer.
#include <gtest/gtest.h>

#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "core/expert_placement.h"
#include "core/metrics.h"
#include "cpu/ep_combine.h"
#include "cpu/ep_dispatch.h"
#include "cpu/ep_layer.h"
#include "cpu/layer.h"
#include "ep_fixture.h"
#include "layer_fixture.h"
#include "test_util.h"
#include "tolerances.h"

namespace moerun::cpu {
namespace {

using test::rank_weights;
using test::RankWeights;
using test::rows_of;

TEST(ExpertPlacement, ContiguousAndRoundRobinMaps) {
  const ExpertPlacement c = ExpertPlacement::contiguous(8, 4);
  EXPECT_EQ(c.expert_map(2), (std::vector<std::int32_t>{-1, -1, -1, -1, 0, 1, -1, -1}));
  EXPECT_EQ(c.owner(5), 2);
  const ExpertPlacement rr = ExpertPlacement::round_robin(8, 4);
  EXPECT_EQ(rr.expert_map(1), (std::vector<std::int32_t>{-1, 0, -1, -1, -1, 1, -1, -1}));
  EXPECT_EQ(rr.owner(6), 2);
  EXPECT_EQ(rr.local_id(6), 1);
  EXPECT_EQ(rr.global_id(2, 1), 6);
}

TEST(ExpertPlacement, RejectsMapsThatDoNotPlaceEveryExpertOnce) {
  const std::vector<std::int32_t> rank0 = {0, 1, -1, -1};
  EXPECT_EQ(test::error_of([&] {
              ExpertPlacement::from_expert_maps({rank0, {-1, 0, 1, -1}});
            }),
            "moerun: invalid owner of expert 1: expected one rank (redundant experts are not "
            "supported), got ranks 0 and 1");
  EXPECT_EQ(test::error_of([&] {
              ExpertPlacement::from_expert_maps({rank0, {-1, -1, 0, -1}});
            }),
            "moerun: invalid local experts of rank 1: expected 2 (num_experts / ep_size, the same "
            "on every rank), got 1");
  EXPECT_CONTAINS(test::error_of([&] {
                    ExpertPlacement::from_expert_maps({rank0, {-1, -1, 1, 1}});
                  }),
                  "invalid expert_map[3]");
  EXPECT_CONTAINS(test::error_of([&] {
                    ExpertPlacement::from_expert_maps({rank0, {-1, -1, 1}});
                  }),
                  "invalid expert_map size");
  EXPECT_EQ(test::error_of([] { ExpertPlacement::contiguous(6, 4); }),
            "moerun: invalid num_experts: expected a positive multiple of ep_size (4) for expert "
            "parallelism, got 6");
}

TEST(EpDispatch, RowsFollowSourceRankThenTokenOrder) {
  // E = 4 over 2 ranks (round robin: rank 0 owns 0 and 2, rank 1 owns 1 and 3), k = 2, BF16.
  const ExpertPlacement p = ExpertPlacement::round_robin(4, 2);
  const HostTensor h0 = test::make_bf16(2, 8, std::vector<float>(16, 1.0f));
  const HostTensor h1 = test::make_bf16(3, 8, std::vector<float>(24, 2.0f));
  const HostTensor ids0 = test::make_i32(2, 2, {2, 1, 0, 2});
  const HostTensor ids1 = test::make_i32(3, 2, {2, -1, 3, 1, 1, 0});
  const HostTensor w0 = test::make_f32(2, 2, {1, 1, 1, 1});
  const HostTensor w1 = test::make_f32(3, 2, {1, 1, 1, 1, 1, 1});
  const std::vector<EpRankTokens> ranks = {{h0.view(), ids0.view(), w0.view()},
                                           {h1.view(), ids1.view(), w1.view()}};
  const EpDispatched d = ep_dispatch(p, ranks, 2, DType::kBF16, {Layout::kContiguous, 0, 0});
  EXPECT_EQ(d.slot_stride, 6);
  // Rank 0, local 0 = expert 0: (r0 t1 j0), (r1 t2 j1); local 1 = expert 2: (r0 t0), (r0 t1 j1),
  // (r1 t0). Segments padded to 128 rows.
  const EpReceived& r0 = d.received[0];
  EXPECT_EQ(r0.layout.masked_m.data<int>()[0], 2);
  EXPECT_EQ(r0.layout.masked_m.data<int>()[1], 3);
  EXPECT_EQ(r0.layout.m_sum, 256);
  const std::vector<int> origins0 = {2, 6 + 5};
  for (int i = 0; i < 2; ++i) EXPECT_EQ(r0.origin.data<int>()[i], origins0[i]) << i;
  const std::vector<int> origins2 = {0, 3, 6 + 0};
  for (int i = 0; i < 3; ++i) EXPECT_EQ(r0.origin.data<int>()[128 + i], origins2[i]) << i;
  EXPECT_EQ(r0.origin.data<int>()[2], -1);
  EXPECT_EQ(r0.layout.m_indices.data<int>()[1], 0);
  EXPECT_EQ(r0.layout.m_indices.data<int>()[2], -1);
  EXPECT_EQ(r0.layout.m_indices.data<int>()[130], 1);
  // Rank 1, local 0 = expert 1: (r0 t0 j1), (r1 t1 j1), (r1 t2 j0); local 1 = expert 3: (r1 t1).
  const EpReceived& r1 = d.received[1];
  EXPECT_EQ(r1.layout.masked_m.data<int>()[0], 3);
  EXPECT_EQ(r1.layout.masked_m.data<int>()[1], 1);
  EXPECT_EQ(r1.origin.data<int>()[128], 6 + 2);
  // Where source rank 1's slots went.
  const std::vector<int> rank1 = {0, -1, 1, 1, 1, 0};
  const std::vector<int> row1 = {130, -1, 128, 1, 2, 1};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(d.sent[1].dest_rank.data<int>()[i], rank1[i]) << i;
    EXPECT_EQ(d.sent[1].dest_row.data<int>()[i], row1[i]) << i;
  }
  // The payload is the token's row.
  EXPECT_EQ(bf16_to_float(r1.layout.tokens.data<bf16>()[2 * 8]), 2.0f);
  EXPECT_EQ(bf16_to_float(r1.layout.tokens.data<bf16>()[0]), 1.0f);
}

TEST(EpDispatch, MaskedRowsBeyondMMaxAreRejected) {
  const ExpertPlacement p = ExpertPlacement::contiguous(2, 1);
  const HostTensor h = test::make_bf16(2, 8, std::vector<float>(16, 1.0f));
  const HostTensor ids = test::make_i32(2, 1, {0, 0});
  const HostTensor w = test::make_f32(2, 1, {1, 1});
  const std::vector<EpRankTokens> ranks = {{h.view(), ids.view(), w.view()}};
  EXPECT_NO_THROW(ep_dispatch(p, ranks, 1, DType::kBF16, {Layout::kMasked, 128, 0}));
  EXPECT_EQ(test::error_of([&] {
              ep_dispatch(p, ranks, 1, DType::kBF16, {Layout::kMasked, 0, 1});
            }),
            "moerun: invalid slot_stride: expected >= the largest T * k (2), got 1");
}

struct EpCase {
  std::string family;
  int ranks;
  Layout layout;
  bool round_robin;
};

std::string case_name(const ::testing::TestParamInfo<EpCase>& info) {
  std::string family = info.param.family.substr(0, info.param.family.find('-'));
  return family + "_R" + std::to_string(info.param.ranks) + "_" +
         std::string(layout_name(info.param.layout)) +
         (info.param.round_robin ? "_RoundRobin" : "");
}

// Short names in test listings (gtest prints a parameter without PrintTo as raw bytes).
void PrintTo(const EpCase& c, std::ostream* os) {
  *os << c.family << " R" << c.ranks << " " << layout_name(c.layout)
      << (c.round_robin ? " round-robin" : "");
}

class EpLayerVsSingleRank : public ::testing::TestWithParam<EpCase> {};

// Per-rank token counts that include a rank with none; routing with -1 slots, a token with all
// experts on one remote rank, and expert 0 of every rank hit.
TEST_P(EpLayerVsSingleRank, AllToAllEqualsSingleRankBitwise) {
  const EpCase& ep = GetParam();
  const std::uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  MoeConfig config = test::scaled_config(ep.family);
  const std::vector<std::int64_t> counts = {5, 0, 9, 3, 1, 7, 4, 2};
  std::int64_t total = 0;
  for (int r = 0; r < ep.ranks; ++r) total += counts[static_cast<std::size_t>(r)];
  test::LayerCase lc(config, total, seed);
  const ExpertPlacement placement = ep.round_robin
                                        ? ExpertPlacement::round_robin(config.num_experts, ep.ranks)
                                        : ExpertPlacement::contiguous(config.num_experts, ep.ranks);
  add_ep_routing_cases(placement, total, config.top_k(), lc.routing.ids.data<int>());
  config.ep_size = ep.ranks;
  const RankWeights rw = rank_weights(lc.weights.view(), placement);

  std::vector<HostTensor> hidden, rank_ids, weights, outs;
  std::vector<EpRankTokens> ranks;
  std::vector<TensorView> out_views;
  std::int64_t begin = 0;
  for (int r = 0; r < ep.ranks; ++r) {
    const std::int64_t end = begin + counts[static_cast<std::size_t>(r)];
    hidden.push_back(rows_of(lc.hidden.view(), begin, end));
    rank_ids.push_back(rows_of(lc.routing.ids.view(), begin, end));
    weights.push_back(rows_of(lc.routing.weights.view(), begin, end));
    outs.emplace_back(DType::kBF16, Shape{end - begin, config.hidden_size});
    test::poison(outs.back());
    begin = end;
  }
  for (int r = 0; r < ep.ranks; ++r) {
    ranks.push_back({hidden[r].view(), rank_ids[r].view(), weights[r].view()});
    out_views.push_back(outs[r].view());
  }
  for (const bool overlap : {false, true}) {
    if (overlap && ep.layout != Layout::kMasked) continue;
    ep_forward_all_to_all(config, placement, rw.views, ranks, out_views, {ep.layout, 0, 0},
                          overlap);
    MoeConfig single = config;
    single.ep_size = 1;
    for (int r = 0; r < ep.ranks; ++r) {
      HostTensor expected(DType::kBF16, {ranks[r].hidden.size(0), config.hidden_size});
      moe_forward(single, lc.weights.view(), ranks[r].hidden, ranks[r].topk_ids,
                  ranks[r].topk_weights, expected.view(), {ep.layout});
      EXPECT_TRUE(test::bitwise_equal(outs[r], expected)) << "rank " << r << " overlap " << overlap;
    }
  }
}

TEST_P(EpLayerVsSingleRank, StandardMatchesSingleRank) {
  const EpCase& ep = GetParam();
  const std::uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  MoeConfig config = test::scaled_config(ep.family);
  test::LayerCase lc(config, 24, seed);
  const ExpertPlacement placement = ep.round_robin
                                        ? ExpertPlacement::round_robin(config.num_experts, ep.ranks)
                                        : ExpertPlacement::contiguous(config.num_experts, ep.ranks);
  config.ep_size = ep.ranks;
  const RankWeights rw = rank_weights(lc.weights.view(), placement);
  HostTensor out(DType::kBF16, {24, config.hidden_size});
  test::poison(out);
  ep_forward_standard(config, placement, rw.views, lc.hidden.view(), lc.routing.ids.view(),
                      lc.routing.weights.view(), out.view(), {ep.layout});
  MoeConfig single = config;
  single.ep_size = 1;
  HostTensor expected(DType::kBF16, {24, config.hidden_size});
  moe_forward(single, lc.weights.view(), lc.hidden.view(), lc.routing.ids.view(),
              lc.routing.weights.view(), expected.view(), {ep.layout});
  EXPECT_LE(relative_error(out.view(), expected.view()), kStandardEpVsSingleRank);

  // With every token's experts on one rank, the other partials are zeros: the same bits.
  int* ids = lc.routing.ids.data<int>();
  for (std::int64_t t = 0; t < 24; ++t) {
    for (int j = 0; j < config.top_k(); ++j) {
      const int local = placement.num_local_experts();
      ids[t * config.top_k() + j] = j < local ? placement.global_id(ep.ranks - 1, j) : -1;
    }
  }
  ep_forward_standard(config, placement, rw.views, lc.hidden.view(), lc.routing.ids.view(),
                      lc.routing.weights.view(), out.view(), {ep.layout});
  moe_forward(single, lc.weights.view(), lc.hidden.view(), lc.routing.ids.view(),
              lc.routing.weights.view(), expected.view(), {ep.layout});
  EXPECT_TRUE(test::bitwise_equal(out, expected));
}

INSTANTIATE_TEST_SUITE_P(Cases, EpLayerVsSingleRank,
                         ::testing::Values(EpCase{"deepseek-v3", 2, Layout::kMasked, false},
                                           EpCase{"deepseek-v3", 4, Layout::kContiguous, true},
                                           EpCase{"qwen3-30b-a3b", 4, Layout::kMasked, true},
                                           EpCase{"qwen3-30b-a3b", 8, Layout::kContiguous, false},
                                           EpCase{"deepseek-v3", 8, Layout::kMasked, true}),
                         case_name);

}  // namespace
}  // namespace moerun::cpu
