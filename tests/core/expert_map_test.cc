#include "moerun/expert_map.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "moerun/config.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun {
namespace {

using Map = std::vector<std::int32_t>;

TEST(ExpertMap, ContiguousPlacement) {
  EXPECT_EQ(contiguous_expert_map(8, 4, 2), (Map{-1, -1, -1, -1, 0, 1, -1, -1}));
  EXPECT_EQ(contiguous_expert_map(4, 1, 0), (Map{0, 1, 2, 3}));
  EXPECT_EQ(test::error_of([] { contiguous_expert_map(10, 4, 0); }),
            "moerun: invalid ep_size: expected a divisor of num_experts (10) for contiguous "
            "placement, got 4");
}

TEST(ExpertMap, RoundRobinPlacementOfExpertsThatDoNotDivide) {
  // 10 experts over 4 ranks: ranks 0 and 1 hold 3, ranks 2 and 3 hold 2.
  EXPECT_EQ(round_robin_expert_map(10, 4, 1), (Map{-1, 0, -1, -1, -1, 1, -1, -1, -1, 2}));
  std::vector<int> owners(10, 0);
  for (int rank = 0; rank < 4; ++rank) {
    const Map map = round_robin_expert_map(10, 4, rank);
    EXPECT_EQ(validate_expert_map(map, 10), rank < 2 ? 3 : 2);
    for (int e = 0; e < 10; ++e) owners[e] += map[e] >= 0 ? 1 : 0;
  }
  for (int e = 0; e < 10; ++e) EXPECT_EQ(owners[e], 1) << e;
  EXPECT_EQ(local_to_global(round_robin_expert_map(10, 4, 1)), (Map{1, 5, 9}));
}

TEST(ExpertMap, RejectsMapsThatBreakTheOneRowPerTokenInvariant) {
  EXPECT_EQ(test::error_of([] {
              validate_expert_map(Map{0, 1, -1}, 4);
            }),
            "moerun: invalid expert_map size: expected num_experts (4), got 3");
  EXPECT_EQ(test::error_of([] {
              validate_expert_map(Map{-1, -1}, 2);
            }),
            "moerun: invalid expert_map: expected at least one local expert (an entry >= 0), got "
            "none");
  EXPECT_EQ(test::error_of([] {
              validate_expert_map(Map{1, 0, 1}, 3);
            }),
            "moerun: invalid expert_map[2]: expected a local id not already given to global "
            "expert 0, got 1");
  EXPECT_EQ(test::error_of([] {
              validate_expert_map(Map{0, 2, -1}, 3);
            }),
            "moerun: invalid expert_map[1]: expected -1 or a local id in [0, 2) (the map has 2 "
            "local experts), got 2");
  EXPECT_EQ(test::error_of([] {
              validate_expert_map(Map{0, -2, 1}, 3);
            }),
            "moerun: invalid expert_map[1]: expected -1 or a local id in [0, 2) (the map has 2 "
            "local experts), got -2");
}

TEST(ExpertMap, MapsIdsWithMinusOneAsTheOnlySkip) {
  const Map map = round_robin_expert_map(6, 2, 0);  // globals 0, 2, 4 -> locals 0, 1, 2
  const Map ids{0, 1, -1, 4, 2, 5};
  Map local(ids.size(), 99);
  map_expert_ids(ids, map, local);
  EXPECT_EQ(local, (Map{0, -1, -1, 2, 1, -1}));
  Map in_place = ids;
  map_expert_ids(in_place, map, in_place);
  EXPECT_EQ(in_place, local);
  const Map bad{0, 6};
  EXPECT_EQ(test::error_of([&] { map_expert_ids(bad, map, local = Map(2)); }),
            "moerun: invalid topk_ids element 1: expected a global expert id in [-1, 6), got 6");
}

TEST(MoeConfigPlacement, ExpertMapDecidesTheLocalExperts) {
  MoeConfig c = model_preset("qwen3-30b-a3b");  // 128 experts
  c.ep_size = 3;
  c.ep_rank = 2;
  EXPECT_THROW(c.validate(), InvalidArgument) << "3 does not divide 128 without a map";
  c.expert_map = round_robin_expert_map(128, 3, 2);
  c.validate();
  EXPECT_EQ(c.num_local_experts(), 42);
  EXPECT_EQ(c.local_expert_map(), c.expert_map);
  EXPECT_EQ(test::error_of([&] { (void)c.first_local_expert(); }),
            "moerun: invalid expert_map: expected none (a first local expert exists for "
            "contiguous placement only), got a map");
  c.expert_map[5] = 0;  // local 0 twice
  EXPECT_THROW(c.validate(), InvalidArgument);
  MoeConfig contiguous = model_preset("qwen3-30b-a3b");
  contiguous.ep_size = 4;
  contiguous.ep_rank = 1;
  EXPECT_EQ(contiguous.first_local_expert(), 32);
  EXPECT_EQ(contiguous.local_expert_map(), contiguous_expert_map(128, 4, 1));
}

TEST(MoeConfigPlacement, OutputScaleMustBeFiniteAndPositive) {
  MoeConfig c = model_preset("small");
  for (float bad : {0.0f, -1.0f, NAN, INFINITY}) {
    c.output_scale = bad;
    EXPECT_THROW(c.validate(), InvalidArgument) << bad;
  }
  c.output_scale = 0.0f;
  EXPECT_EQ(test::error_of([&] { c.validate(); }),
            "moerun: invalid output_scale: expected finite and > 0, got 0.000000");
  c.output_scale = 2.5f;
  EXPECT_NO_THROW(c.validate());
}

}  // namespace
}  // namespace moerun
