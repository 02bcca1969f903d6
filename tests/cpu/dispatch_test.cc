#include "cpu/dispatch.h"

#include <gtest/gtest.h>

#include "moerun/errors.h"
#include "moerun/expert_map.h"
#include "test_util.h"

namespace moerun::cpu {
namespace {

TEST(Dispatch, MapsOwnedExpertsToLocalIdsAndOthersToMinusOne) {
  // E = 8 over 4 ranks: rank 2 owns global experts 4 and 5.
  const HostTensor ids = test::make_i32(3, 2, {4, 5, 3, -1, 6, 4});
  const HostTensor local = map_to_local(ids.view(), contiguous_expert_map(8, 4, 2));
  const std::vector<int> expected = {0, 1, -1, -1, -1, 0};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(local.data<int>()[i], expected[i]) << i;
}

TEST(Dispatch, EveryExpertHasExactlyOneOwner) {
  const HostTensor ids = test::make_i32(1, 8, {0, 1, 2, 3, 4, 5, 6, 7});
  std::vector<int> owners(8, 0);
  for (int rank = 0; rank < 4; ++rank) {
    const HostTensor local = map_to_local(ids.view(), contiguous_expert_map(8, 4, rank));
    for (int j = 0; j < 8; ++j) {
      if (local.data<int>()[j] >= 0) {
        ++owners[j];
        EXPECT_EQ(rank * 2 + local.data<int>()[j], j);
      }
    }
  }
  for (int e = 0; e < 8; ++e) EXPECT_EQ(owners[e], 1) << e;
}

TEST(Dispatch, RejectsIdsOutsideTheExpertRange) {
  const HostTensor ids = test::make_i32(2, 2, {0, 1, 8, 2});
  try {
    map_to_local(ids.view(), contiguous_expert_map(8, 1, 0));
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "moerun: invalid topk_ids[1, 0]: expected an expert id in [-1, 8), got 8");
  }
  const HostTensor below = test::make_i32(1, 2, {-2, 1});
  EXPECT_THROW(map_to_local(below.view(), contiguous_expert_map(8, 1, 0)), InvalidArgument);
}

TEST(Dispatch, RejectsATokenChoosingTheSameExpertTwice) {
  const HostTensor ids = test::make_i32(1, 3, {3, -1, 3});
  try {
    map_to_local(ids.view(), contiguous_expert_map(8, 1, 0));
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "moerun: invalid topk_ids[0, 2]: expected an expert not already chosen by token 0 "
                 "(slot 0), got 3");
  }
  // Several -1 slots are fine.
  const HostTensor skips = test::make_i32(1, 3, {-1, 2, -1});
  EXPECT_NO_THROW(map_to_local(skips.view(), contiguous_expert_map(8, 1, 0)));
}

}  // namespace
}  // namespace moerun::cpu
