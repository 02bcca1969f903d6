// The CUDA layer's workspace plan, checked without a GPU (plain C++ in every build).
#include "cuda/workspace.h"

#include <gtest/gtest.h>

#include "moerun/errors.h"
#include "moerun/layer.h"
#include "test_util.h"

namespace moerun::cuda {
namespace {

MoeConfig small_config() {
  MoeConfig c = model_preset("small");  // FP8, 32 experts
  c.ep_size = 4;
  return c;
}

LayerOptions options_for(LayoutChoice layout, std::int64_t max_tokens, bool overlap = false) {
  LayerOptions o;
  o.backend = Backend::kCuda;
  o.layout = layout;
  o.max_tokens = max_tokens;
  o.overlap = overlap;
  return o;
}

// The workspace a forward of T tokens really uses, for the layout the plan gives T.
std::size_t forward_bytes(const MoeConfig& c, const WorkspacePlan& plan, std::int64_t tokens) {
  return make_arena(c, c.num_local_experts(), tokens, plan.layout_for(tokens), plan.overlap).total;
}

TEST(WorkspacePlan, LayoutRuleFollowsTheChoice) {
  const MoeConfig c = small_config();
  const WorkspacePlan automatic = plan_workspace(c, options_for(LayoutChoice::kAuto, 1000));
  EXPECT_EQ(automatic.layout_for(1), Layout::kMasked);
  EXPECT_EQ(automatic.layout_for(kMaskedMaxTokens), Layout::kMasked);
  EXPECT_EQ(automatic.layout_for(kMaskedMaxTokens + 1), Layout::kContiguous);
  const WorkspacePlan masked = plan_workspace(c, options_for(LayoutChoice::kMasked, 1000));
  EXPECT_EQ(masked.layout_for(1000), Layout::kMasked);
  const WorkspacePlan contiguous = plan_workspace(c, options_for(LayoutChoice::kContiguous, 1000));
  EXPECT_EQ(contiguous.layout_for(1), Layout::kContiguous);
}

// What a caller sizes with bytes_for(T) must hold every forward of up to T tokens, in every
// layout rule; and the bound grows with T (a graph bucket's workspace serves smaller batches).
TEST(WorkspacePlan, BytesForBoundEveryForwardUpToT) {
  for (bool fp8 : {true, false}) {
    MoeConfig c = small_config();
    if (!fp8) c.weight_dtype = DType::kBF16;
    for (LayoutChoice choice :
         {LayoutChoice::kAuto, LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
      for (bool overlap : {false, true}) {
        const WorkspacePlan plan = plan_workspace(c, options_for(choice, 700, overlap));
        std::size_t previous = 0;
        for (std::int64_t t : {0, 1, 2, 63, 127, 128, 129, 300, 699, 700}) {
          const std::size_t bound = workspace_bytes_for(c, plan, t);
          SCOPED_TRACE("T " + std::to_string(t));
          EXPECT_GE(bound, previous);
          EXPECT_LE(bound, plan.bytes);
          for (std::int64_t smaller : {std::int64_t{0}, t / 2, t}) {
            EXPECT_LE(forward_bytes(c, plan, smaller), bound) << "forward of " << smaller;
          }
          previous = bound;
        }
        EXPECT_EQ(workspace_bytes_for(c, plan, 700), plan.bytes);
        EXPECT_EQ(plan.bytes % kWorkspaceAlignment, 0u);
      }
    }
  }
}

TEST(WorkspacePlan, ArenaBuffersAreAlignedAndDisjoint) {
  const MoeConfig c = small_config();
  for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
    const Arena a = make_arena(c, c.num_local_experts(), 200, layout, true);
    for (std::size_t offset :
         {a.topk_ids, a.topk_weights, a.local_ids, a.src2dst, a.masked_m, a.m_sum, a.m_indices,
          a.counters, a.permute_ws, a.region_a, a.region_b}) {
      EXPECT_EQ(offset % kWorkspaceAlignment, 0u);
      EXPECT_LT(offset, a.total);
    }
    EXPECT_LT(a.region_a, a.region_b);
    EXPECT_GE(a.permute_ws + a.permute_ws_bytes, a.permute_ws);
    EXPECT_LE(a.permute_ws + a.permute_ws_bytes, a.region_a);
  }
}

TEST(WorkspacePlan, PublicQueryMatchesThePlan) {
  const MoeConfig c = small_config();
  const LayerOptions o = options_for(LayoutChoice::kAuto, 512);
  EXPECT_EQ(workspace_bytes(c, o), plan_workspace(c, o).bytes);
  LayerOptions cpu = o;
  cpu.backend = Backend::kCpu;
  EXPECT_EQ(workspace_bytes(c, cpu), 0u);
  LayerOptions none = o;
  none.max_tokens = 0;
  EXPECT_EQ(test::error_of([&] { workspace_bytes(c, none); }),
            "moerun: invalid max_tokens: expected > 0 for the CUDA backend (it decides the "
            "layouts and the workspace size), got 0");
  const WorkspacePlan plan = plan_workspace(c, o);
  EXPECT_EQ(test::error_of([&] { workspace_bytes_for(c, plan, 513); }),
            "moerun: invalid tokens: expected 0 <= tokens <= max_tokens (512), got 513");
}

TEST(WorkspacePlan, BudgetDropsTheMaskedLayoutOrRejects) {
  const MoeConfig c = model_preset("small");  // 32 experts, k 8
  LayerOptions o = options_for(LayoutChoice::kAuto, 2);
  const WorkspacePlan full = plan_workspace(c, o);
  const WorkspacePlan contiguous = plan_workspace(c, options_for(LayoutChoice::kContiguous, 2));
  // E_l x 128 masked rows outweigh the contiguous 128 rows for each of T x k = 16 slots.
  ASSERT_LT(contiguous.bytes, full.bytes);
  o.workspace_limit_bytes = contiguous.bytes;
  const WorkspacePlan budget = plan_workspace(c, o);
  EXPECT_EQ(budget.layout_for(1), Layout::kContiguous);
  EXPECT_EQ(budget.bytes, contiguous.bytes);
  o.workspace_limit_bytes = 1024;
  EXPECT_THROW(plan_workspace(c, o), InvalidArgument);
}

}  // namespace
}  // namespace moerun::cuda
