#include "cuda/layer.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>

#include "cuda/activation.h"
#include "cuda/combine.h"
#include "cuda/cuda_check.h"
#include "cuda/dispatch.h"
#include "cuda/gemm.h"
#include "cuda/permute.h"
#include "cuda/routing.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr std::size_t kAlign = 256;

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
std::size_t bytes_of(std::int64_t count, DType dtype) {
  return static_cast<std::size_t>(count) * dtype_size(dtype);
}

// The masked M_max for T tokens, as the oracle derives it: T rounded up to 128, at least 128.
std::int64_t masked_m_max(std::int64_t tokens) {
  return std::max<std::int64_t>(1, ceil_div<std::int64_t>(tokens, kPermuteAlignment)) *
         kPermuteAlignment;
}

// Byte offsets of every buffer in the layer's one allocation. Regions A and B are reused:
//   A: permuted tokens (+ scales), later the activation (+ scales) -- the tokens are dead by then;
//   B: gate_up, later down -- gate_up is dead once the activation has read it.
struct Arena {
  std::size_t topk_ids = 0, topk_weights = 0, local_ids = 0, src2dst = 0;
  std::size_t masked_m = 0, m_sum = 0, m_indices = 0, counters = 0;
  std::size_t permute_ws = 0, permute_ws_bytes = 0;
  std::size_t region_a = 0, tokens_scale = 0, act_scale = 0, region_b = 0;
  std::size_t total = 0;
};

Arena make_arena(const MoeConfig& c, const WorkspacePlan& plan, bool overlap) {
  const std::int64_t k = c.top_k(), h = c.hidden_size, inter = c.intermediate_size;
  const int experts = c.num_local_experts();
  const DType act = c.weight_dtype;
  const bool fp8 = c.is_fp8();
  const std::int64_t m_max_cap =
      plan.masked_max_tokens > 0 ? masked_m_max(plan.masked_max_tokens) : 0;
  const std::int64_t contiguous_cap =
      plan.contiguous_max_tokens > 0 ? contiguous_capacity(plan.contiguous_max_tokens, k, experts)
                                     : 0;
  const std::int64_t rows = std::max<std::int64_t>(experts * m_max_cap, contiguous_cap);
  Arena a;
  std::size_t offset = 0;
  auto take = [&](std::size_t bytes) {
    const std::size_t at = offset;
    offset = align_up(offset + bytes);
    return at;
  };
  const std::int64_t slots = plan.max_tokens * k;
  a.topk_ids = take(bytes_of(slots, DType::kI32));
  a.topk_weights = take(bytes_of(slots, DType::kF32));
  a.local_ids = take(bytes_of(slots, DType::kI32));
  a.src2dst = take(bytes_of(slots, DType::kI32));
  a.masked_m = take(bytes_of(experts, DType::kI32));
  a.m_sum = take(sizeof(int));
  a.m_indices = take(bytes_of(contiguous_cap, DType::kI32));
  a.counters = take(overlap ? bytes_of(experts * (m_max_cap / kGemmBlockM), DType::kI32) : 0);
  a.permute_ws_bytes = permute_workspace_bytes(plan.max_tokens, k, experts);
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

std::size_t plan_bytes(const MoeConfig& c, WorkspacePlan plan, bool overlap) {
  return make_arena(c, plan, overlap).total;
}

}  // namespace

void LayerBackend::mark(int index, cudaStream_t stream) const {
  if (stage_events_ == nullptr) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MOERUN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  cudaEvent_t event = (*stage_events_)[static_cast<std::size_t>(index)];
  // NOTE: a plain record inside a capture only orders streams; External makes it a graph node
  // that records the event on every replay.
  MOERUN_CUDA_CHECK(capture == cudaStreamCaptureStatusActive
                        ? cudaEventRecordWithFlags(event, stream, cudaEventRecordExternal)
                        : cudaEventRecord(event, stream));
}

WorkspacePlan plan_workspace(const MoeConfig& config, const LayerOptions& options) {
  const std::int64_t max_tokens = options.max_tokens;
  check_arg(max_tokens > 0, "max_tokens",
            "> 0 for the CUDA backend (its workspace is allocated once, at construction)",
            max_tokens);
  const std::size_t limit = options.workspace_limit_bytes;
  auto make = [&](std::int64_t masked, std::int64_t contiguous) {
    WorkspacePlan p{max_tokens, masked, contiguous, 0};
    p.bytes = plan_bytes(config, p, options.overlap);
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
      const WorkspacePlan p = make(max_tokens, 0);
      if (!fits(p)) reject(p, "the masked layout");
      return p;
    }
    case LayoutChoice::kContiguous: {
      const WorkspacePlan p = make(0, max_tokens);
      if (!fits(p)) reject(p, "the contiguous layout");
      return p;
    }
    case LayoutChoice::kAuto:
      break;
  }
  // Auto: masked for small batches, contiguous beyond; masked dropped when the budget is short.
  const std::int64_t masked = std::min(max_tokens, kMaskedMaxTokens);
  const WorkspacePlan both = make(masked, max_tokens > masked ? max_tokens : 0);
  if (fits(both)) return both;
  const WorkspacePlan contiguous = make(0, max_tokens);
  if (!fits(contiguous)) reject(contiguous, "the contiguous layout");
  return contiguous;
}

LayerBackend::LayerBackend(const MoeConfig& config, const MoeWeights& weights,
                           const LayerOptions& options)
    : config_(config), weights_(weights), options_(options) {
  config.validate();
  weights.validate(config, config.num_local_experts(), DeviceType::kCuda);
  check_arg(config.num_local_experts() <= kPermuteMaxLocalExperts, "num_local_experts",
            "<= " + std::to_string(kPermuteMaxLocalExperts) + " on CUDA",
            config.num_local_experts());
  check_arg(config.num_experts <= kRoutingMaxExperts, "num_experts",
            "<= " + std::to_string(kRoutingMaxExperts) + " on CUDA", config.num_experts);
  check_arg(config.top_k() <= kRoutingMaxTopK, "top_k",
            "<= " + std::to_string(kRoutingMaxTopK) + " on CUDA", config.top_k());
  plan_ = plan_workspace(config, options);
  MOERUN_CUDA_CHECK(cudaMalloc(&workspace_, plan_.bytes));
}

LayerBackend::~LayerBackend() {
  if (workspace_ != nullptr) cudaFree(workspace_);  // no throw from a destructor
}

Layout LayerBackend::layout_for(std::int64_t tokens) const {
  return tokens <= plan_.masked_max_tokens ? Layout::kMasked : Layout::kContiguous;
}

void LayerBackend::check_io(const TensorView& hidden, const TensorView& out) const {
  check_arg(hidden.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.ndim());
  const std::int64_t tokens = hidden.size(0);
  check_arg(tokens <= plan_.max_tokens, "hidden_states tokens",
            "<= max_tokens (" + std::to_string(plan_.max_tokens) + ")", tokens);
  check_tensor(hidden, "hidden_states", DType::kBF16, {tokens, config_.hidden_size},
               DeviceType::kCuda);
  check_arg(out.dtype() == DType::kBF16 || out.dtype() == DType::kF32, "out dtype", "bf16 or f32",
            dtype_name(out.dtype()));
  check_tensor(out, "out", out.dtype(), {tokens, config_.hidden_size}, DeviceType::kCuda);
}

void LayerBackend::forward(const TensorView& hidden, const TensorView& router_logits,
                           const TensorView& out, cudaStream_t stream) {
  check_io(hidden, out);
  const std::int64_t tokens = hidden.size(0);
  const Arena arena = make_arena(config_, plan_, options_.overlap);
  auto* base = static_cast<std::byte*>(workspace_);
  const Device device{DeviceType::kCuda, 0};
  const TensorView ids(base + arena.topk_ids, DType::kI32, {tokens, config_.top_k()}, device);
  const TensorView weights(base + arena.topk_weights, DType::kF32, {tokens, config_.top_k()},
                           device);
  mark(static_cast<int>(Stage::kRouting), stream);
  route(config_.routing, config_.num_experts, router_logits, weights_.correction_bias, ids, weights,
        stream);
  forward_routed(hidden, ids, weights, out, stream);
}

void LayerBackend::forward_routed(const TensorView& hidden, const TensorView& topk_ids,
                                  const TensorView& topk_weights, const TensorView& out,
                                  cudaStream_t stream) {
  check_io(hidden, out);
  const std::int64_t tokens = hidden.size(0);
  const std::int64_t k = config_.top_k(), h = config_.hidden_size,
                     inter = config_.intermediate_size;
  check_tensor(topk_ids, "topk_ids", DType::kI32, {tokens, k}, DeviceType::kCuda);
  check_tensor(topk_weights, "topk_weights", DType::kF32, {tokens, k}, DeviceType::kCuda);
  if (tokens == 0) return;

  const Arena arena = make_arena(config_, plan_, options_.overlap);
  auto* base = static_cast<std::byte*>(workspace_);
  const Device device{DeviceType::kCuda, 0};
  const int experts = config_.num_local_experts();
  const DType act = config_.weight_dtype;
  const bool fp8 = config_.is_fp8();
  const Layout layout = layout_for(tokens);
  const bool masked = layout == Layout::kMasked;

  mark(static_cast<int>(Stage::kDispatchPermute), stream);
  const TensorView local_ids(base + arena.local_ids, DType::kI32, {tokens, k}, device);
  map_to_local(topk_ids, config_.num_experts, config_.ep_size, config_.ep_rank, local_ids, stream);

  const std::int64_t m_max = masked ? masked_m_max(tokens) : 0;
  const std::int64_t rows = masked ? experts * m_max : contiguous_capacity(tokens, k, experts);
  // Views of one layout: masked [E_l, M_max, cols], contiguous [rows, cols].
  auto rows_view = [&](std::size_t offset, DType dtype, std::int64_t cols) {
    void* p = base + offset;
    return masked ? TensorView(p, dtype, {experts, m_max, cols}, device)
                  : TensorView(p, dtype, {rows, cols}, device);
  };
  // FP8 activation scales, MN-major (core/scale_layout.h): masked [E_l, k_blocks, M_max],
  // contiguous [k_blocks, rows].
  auto scale_view = [&](std::size_t offset, std::int64_t k_blocks) {
    void* p = base + offset;
    return masked ? TensorView(p, DType::kF32, {experts, k_blocks, m_max}, device)
                  : TensorView(p, DType::kF32, {k_blocks, rows}, device);
  };
  PermuteOutputs permuted;
  permuted.layout = layout;
  permuted.tokens = rows_view(arena.region_a, act, h);
  if (fp8) permuted.scales = scale_view(arena.tokens_scale, h / kQuantGroup);
  permuted.masked_m = TensorView(base + arena.masked_m, DType::kI32, {experts}, device);
  if (!masked) {
    permuted.m_indices = TensorView(base + arena.m_indices, DType::kI32, {rows}, device);
    permuted.m_sum = TensorView(base + arena.m_sum, DType::kI32, {1}, device);
  }
  permuted.src2dst = TensorView(base + arena.src2dst, DType::kI32, {tokens, k}, device);
  permute(hidden, local_ids, experts, act, permuted, base + arena.permute_ws,
          arena.permute_ws_bytes, stream);

  const TensorView gate_up = rows_view(arena.region_b, DType::kBF16, 2 * inter);
  const GemmOperand w13{weights_.w13, weights_.w13_scale};
  // DESIGN.md's expected_m (global E): a tile-shape hint for the masked GEMMs, never the results.
  const std::int64_t expected_m = ceil_div<std::int64_t>(tokens * k, config_.num_experts);
  mark(static_cast<int>(Stage::kGateUp), stream);
  if (masked) {
    grouped_gemm_masked({permuted.tokens, permuted.scales}, w13, permuted.masked_m, gate_up,
                        nullptr, stream, expected_m);
  } else {
    grouped_gemm_contiguous({permuted.tokens, permuted.scales}, w13, permuted.m_indices, gate_up,
                            stream);
  }

  const TensorView activation = rows_view(arena.region_a, act, inter);
  const TensorView activation_scale =
      fp8 ? scale_view(arena.act_scale, inter / kQuantGroup) : TensorView();
  mark(static_cast<int>(Stage::kActivation), stream);
  silu_and_mul(gate_up, {layout, permuted.masked_m, m_max, tokens * k}, activation,
               activation_scale, stream);

  const TensorView down = rows_view(arena.region_b, DType::kBF16, h);
  const GemmOperand w2{weights_.w2, weights_.w2_scale};
  mark(static_cast<int>(Stage::kDown), stream);
  if (masked && options_.overlap) {
    const std::int64_t counters_count = experts * (m_max / kGemmBlockM);
    const TensorView counters(base + arena.counters, DType::kI32, {counters_count}, device);
    MOERUN_CUDA_CHECK(cudaMemsetAsync(counters.data(), 0, counters.nbytes(), stream));
    const OverlapSignal signal{counters, kGemmBlockM};
    const std::optional<OverlapReport> report = grouped_gemm_masked(
        {activation, activation_scale}, w2, permuted.masked_m, down, &signal, stream, expected_m);
    if (!report) throw Error("the down GEMM was asked for an overlap report and gave none");
    const CombineWait wait{counters, m_max, report->block_m, report->threshold};
    mark(static_cast<int>(Stage::kCombine), stream);
    combine(down, permuted.src2dst, topk_weights, out, &wait, stream);
    mark(kNumStages, stream);
    return;
  }
  if (masked) {
    // No signal, no report: nothing here expects one.
    grouped_gemm_masked({activation, activation_scale}, w2, permuted.masked_m, down, nullptr,
                        stream, expected_m);
  } else {
    grouped_gemm_contiguous({activation, activation_scale}, w2, permuted.m_indices, down, stream);
  }
  mark(static_cast<int>(Stage::kCombine), stream);
  combine(down, permuted.src2dst, topk_weights, out, nullptr, stream);
  mark(kNumStages, stream);
}

}  // namespace moerun::cuda
