// The CUDA layer's workspace, in plain C++ (sizes are known without a GPU, so
// moerun::workspace_bytes works in every build). A forward of T tokens uses one layout and carves
// its buffers out of the workspace from offset 0 (make_arena); what it needs grows with T.
#pragma once

#include <cstddef>
#include <cstdint>

#include "moerun/config.h"
#include "moerun/layer.h"

namespace moerun::cuda {

// Every buffer starts at a multiple of this (cudaMalloc's alignment; TMA needs 16 bytes).
inline constexpr std::size_t kWorkspaceAlignment = 256;

// Tokens up to which LayoutChoice::kAuto uses the masked layout: its GEMMs then have at most
// M_max = 128 rows per expert, and its launches never depend on the routing.
inline constexpr std::int64_t kMaskedMaxTokens = 128;

// Which layout each T uses, and what a workspace for up to max_tokens holds.
struct WorkspacePlan {
  std::int64_t max_tokens = 0;
  std::int64_t masked_max_tokens = 0;  // T <= this: masked; beyond: contiguous (0: never masked)
  bool overlap = false;                // masked forwards keep overlap counters
  std::size_t bytes = 0;               // what every forward of T <= max_tokens fits in

  Layout layout_for(std::int64_t tokens) const {
    return tokens <= masked_max_tokens ? Layout::kMasked : Layout::kContiguous;
  }
};

// The plan for `options` (layout choice, max_tokens > 0, overlap, workspace_limit_bytes): rejects
// a budget that cannot hold the layout asked for, naming both sizes.
WorkspacePlan plan_workspace(const MoeConfig& config, const LayerOptions& options);

// Bytes that every forward of at most `tokens` (<= plan.max_tokens) tokens fits in under `plan`.
std::size_t workspace_bytes_for(const MoeConfig& config, const WorkspacePlan& plan,
                                std::int64_t tokens);

// The masked M_max for T tokens, as the oracle derives it: T rounded up to 128, at least 128.
std::int64_t masked_m_max(std::int64_t tokens);

// Byte offsets of one forward's buffers. Regions A and B are reused:
//   A: permuted tokens (+ scales), later the activation (+ scales) -- the tokens are dead by then;
//   B: gate_up, later down -- gate_up is dead once the activation has read it.
struct Arena {
  std::size_t topk_ids = 0, topk_weights = 0, local_ids = 0, src2dst = 0;
  std::size_t masked_m = 0, m_sum = 0, m_indices = 0, counters = 0;
  std::size_t permute_ws = 0, permute_ws_bytes = 0;
  std::size_t region_a = 0, tokens_scale = 0, act_scale = 0, region_b = 0;
  std::size_t total = 0;
};

// The buffers of a forward of `tokens` tokens in `layout` over `local_experts` experts.
Arena make_arena(const MoeConfig& config, int local_experts, std::int64_t tokens, Layout layout,
                 bool overlap);

}  // namespace moerun::cuda
