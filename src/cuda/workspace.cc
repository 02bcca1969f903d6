#include "cuda/workspace.h"

#include <algorithm>
#include <string>

#include "cuda/gemm_shape.h"
#include "cuda/permute_shape.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

std::size_t align_up(std::size_t n) {
  return (n + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
}

std::size_t bytes_of(std::int64_t count, DType dtype) {
  return static_cast<std::size_t>(count) * dtype_size(dtype);
}

}  // namespace

std::int64_t masked_m_max(std::int64_t tokens) {
  return std::max<std::int64_t>(1, (tokens + kPermuteAlignment - 1) / kPermuteAlignment) *
         kPermuteAlignment;
}

Arena make_arena(const MoeConfig& c, int local_experts, std::int64_t tokens, Layout layout,
                 bool overlap) {
  const std::int64_t k = c.top_k(), h = c.hidden_size, inter = c.intermediate_size;
  const DType act = c.weight_dtype;
  const bool fp8 = c.is_fp8();
  const bool masked = layout == Layout::kMasked;
  const std::int64_t m_max = masked ? masked_m_max(tokens) : 0;
  const std::int64_t rows =
      masked ? local_experts * m_max : contiguous_capacity(tokens, k, local_experts);
  Arena a;
  std::size_t offset = 0;
  auto take = [&](std::size_t bytes) {
    const std::size_t at = offset;
    offset = align_up(offset + bytes);
    return at;
  };
  const std::int64_t slots = tokens * k;
  a.topk_ids = take(bytes_of(slots, DType::kI32));
  a.topk_weights = take(bytes_of(slots, DType::kF32));
  a.local_ids = take(bytes_of(slots, DType::kI32));
  a.src2dst = take(bytes_of(slots, DType::kI32));
  a.masked_m = take(bytes_of(local_experts, DType::kI32));
  a.m_sum = take(sizeof(int));
  a.m_indices = take(masked ? 0 : bytes_of(rows, DType::kI32));
  a.counters =
      take(masked && overlap ? bytes_of(local_experts * (m_max / kGemmBlockM), DType::kI32) : 0);
  a.permute_ws_bytes = permute_workspace_bytes(tokens, k, local_experts);
  a.permute_ws = take(a.permute_ws_bytes);
  const std::size_t tokens_bytes = align_up(bytes_of(rows * h, act));
  const std::size_t act_bytes = align_up(bytes_of(rows * inter, act));
  const std::size_t tokens_scale_bytes = fp8 ? bytes_of(rows * (h / kQuantGroup), DType::kF32) : 0;
  const std::size_t act_scale_bytes = fp8 ? bytes_of(rows * (inter / kQuantGroup), DType::kF32) : 0;
  a.region_a = take(std::max(tokens_bytes + tokens_scale_bytes, act_bytes + act_scale_bytes));
  a.tokens_scale = a.region_a + tokens_bytes;
  a.act_scale = a.region_a + act_bytes;
  a.region_b =
      take(std::max(bytes_of(rows * 2 * inter, DType::kBF16), bytes_of(rows * h, DType::kBF16)));
  a.total = offset;
  return a;
}

std::size_t workspace_bytes_for(const MoeConfig& config, const WorkspacePlan& plan,
                                std::int64_t tokens) {
  check_arg(tokens >= 0 && tokens <= plan.max_tokens, "tokens",
            "0 <= tokens <= max_tokens (" + std::to_string(plan.max_tokens) + ")", tokens);
  const int experts = config.num_local_experts();
  auto arena_bytes = [&](std::int64_t t, Layout layout) {
    return make_arena(config, experts, t, layout, plan.overlap).total;
  };
  // Every buffer grows with T, so the largest forward of each layout bounds the others.
  if (tokens <= plan.masked_max_tokens) return arena_bytes(tokens, Layout::kMasked);
  const std::size_t masked =
      plan.masked_max_tokens > 0 ? arena_bytes(plan.masked_max_tokens, Layout::kMasked) : 0;
  return std::max(masked, arena_bytes(tokens, Layout::kContiguous));
}

WorkspacePlan plan_workspace(const MoeConfig& config, const LayerOptions& options) {
  const std::int64_t max_tokens = options.max_tokens;
  check_arg(max_tokens > 0, "max_tokens",
            "> 0 for the CUDA backend (it decides the layouts and the workspace size)", max_tokens);
  const std::size_t limit = options.workspace_limit_bytes;
  auto make = [&](std::int64_t masked_max_tokens) {
    WorkspacePlan p{max_tokens, masked_max_tokens, options.overlap, 0};
    p.bytes = workspace_bytes_for(config, p, max_tokens);
    return p;
  };
  auto fits = [&](const WorkspacePlan& p) { return limit == 0 || p.bytes <= limit; };
  auto reject = [&](const WorkspacePlan& p, std::string_view what) {
    throw InvalidArgument("workspace_limit_bytes",
                          ">= " + std::to_string(p.bytes) + " bytes for " + std::string(what) +
                              " with max_tokens " + std::to_string(max_tokens),
                          std::to_string(limit));
  };
  switch (options.layout) {
    case LayoutChoice::kMasked: {
      const WorkspacePlan p = make(max_tokens);
      if (!fits(p)) reject(p, "the masked layout");
      return p;
    }
    case LayoutChoice::kContiguous: {
      const WorkspacePlan p = make(0);
      if (!fits(p)) reject(p, "the contiguous layout");
      return p;
    }
    case LayoutChoice::kAuto:
      break;
  }
  // Auto: masked for small batches, contiguous beyond; masked dropped when the budget is short.
  const WorkspacePlan both = make(std::min(max_tokens, kMaskedMaxTokens));
  if (fits(both)) return both;
  const WorkspacePlan contiguous = make(0);
  if (!fits(contiguous)) reject(contiguous, "the contiguous layout");
  return contiguous;
}

}  // namespace moerun::cuda
