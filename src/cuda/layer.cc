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
#include "cuda/runtime.h"
#include "moerun/errors.h"

namespace moerun::cuda {

void LayerBackend::FreeDevice::operator()(void* p) const {
  cudaFree(p);  // no throw from a destructor
}

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

LayerBackend::LayerBackend(const MoeConfig& config, const MoeWeights& weights,
                           const LayerOptions& options)
    : config_(config), weights_(weights), options_(options) {
  config.validate();
  local_experts_ = config.num_local_experts();
  check_arg(weights.w13.device().type == DeviceType::kCuda, "w13 device", "cuda",
            device_name(weights.w13.device()));
  device_ = weights.w13.device().index;
  tensor_device_ = {DeviceType::kCuda, device_};
  // Every weight on the device of w13: the layer's device.
  weights.validate(config, local_experts_, tensor_device_);
  check_arg(local_experts_ <= kPermuteMaxLocalExperts, "num_local_experts",
            "<= " + std::to_string(kPermuteMaxLocalExperts) + " on CUDA", local_experts_);
  check_arg(config.num_experts <= kRoutingMaxExperts, "num_experts",
            "<= " + std::to_string(kRoutingMaxExperts) + " on CUDA", config.num_experts);
  check_arg(config.top_k() <= kRoutingMaxTopK, "top_k",
            "<= " + std::to_string(kRoutingMaxTopK) + " on CUDA", config.top_k());
  plan_ = plan_workspace(config, options);
  const ScopedDevice on_device(device_);
  if (!config.expert_map.empty()) {
    const TensorView host(const_cast<std::int32_t*>(config.expert_map.data()), DType::kI32,
                          {config.num_experts});
    expert_map_ = DeviceBuffer::upload(host);
  }
  if (options.own_workspace) {
    void* p = nullptr;
    MOERUN_CUDA_CHECK(cudaMalloc(&p, plan_.bytes));
    workspace_.reset(p);
    owned_bytes_ = plan_.bytes;
  }
}

std::size_t LayerBackend::workspace_bytes_for(std::int64_t tokens) const {
  return cuda::workspace_bytes_for(config_, plan_, tokens);
}

std::int64_t LayerBackend::check_io(const HiddenStates& hidden, const TensorView& out) const {
  check_arg(hidden.data.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.data.ndim());
  const std::int64_t tokens = hidden.data.size(0), h = config_.hidden_size;
  if (tokens > plan_.max_tokens) {
    throw InvalidArgument("hidden_states tokens",
                          "<= max_tokens (" + std::to_string(plan_.max_tokens) + ")",
                          std::to_string(tokens));
  }
  if (hidden.prequantized()) {
    check_arg(config_.is_fp8(), "hidden_states dtype",
              "bf16 (pre-quantized FP8 input needs FP8 weights)", dtype_name(hidden.data.dtype()));
    check_tensor(hidden.data, "hidden_states", DType::kFP8E4M3, {tokens, h}, tensor_device_);
    check_tensor(hidden.scale, "hidden_states scale", DType::kF32, {tokens, h / kQuantGroup},
                 tensor_device_);
  } else {
    check_tensor(hidden.data, "hidden_states", DType::kBF16, {tokens, h}, tensor_device_);
  }
  if (out.dtype() != DType::kBF16 && out.dtype() != DType::kF32) {
    throw InvalidArgument("out dtype", "bf16 or f32", dtype_name(out.dtype()));
  }
  check_tensor(out, "out", out.dtype(), {tokens, h}, tensor_device_);
  return tokens;
}

void LayerBackend::check_workspace(const Workspace& workspace, const Arena& arena,
                                   std::int64_t tokens) const {
  if (workspace.data == nullptr || workspace.bytes < arena.total) {
    throw InvalidArgument(
        "workspace bytes",
        ">= " + std::to_string(arena.total) + " for " + std::to_string(tokens) +
            " tokens (Layer::workspace_bytes_for)",
        workspace.data == nullptr ? std::string("no workspace") : std::to_string(workspace.bytes));
  }
  const auto address = reinterpret_cast<std::uintptr_t>(workspace.data);
  if (address % kWorkspaceAlignment != 0) {
    throw InvalidArgument(
        "workspace data", "a " + std::to_string(kWorkspaceAlignment) + "-byte aligned address",
        "an address " + std::to_string(address % kWorkspaceAlignment) + " bytes past a boundary");
  }
}

void LayerBackend::forward(const HiddenStates& hidden, const TensorView& router_logits,
                           const TensorView& out, cudaStream_t stream,
                           const Workspace& workspace) const {
  const std::int64_t tokens = check_io(hidden, out);
  const std::int64_t k = config_.top_k();
  check_tensor(router_logits, "router_logits", DType::kF32, {tokens, config_.num_experts},
               tensor_device_);
  if (tokens == 0) return;
  const Layout layout = layout_for(tokens);
  const Arena arena = make_arena(config_, local_experts_, tokens, layout, options_.overlap);
  check_workspace(workspace, arena, tokens);
  const ScopedDevice on_device(device_);
  auto* base = static_cast<std::byte*>(workspace.data);
  const TensorView ids(base + arena.topk_ids, DType::kI32, {tokens, k}, tensor_device_);
  const TensorView weights(base + arena.topk_weights, DType::kF32, {tokens, k}, tensor_device_);
  mark(static_cast<int>(Stage::kRouting), stream);
  route(config_.routing, config_.num_experts, router_logits, weights_.correction_bias, ids, weights,
        stream);
  run_routed(hidden, {ids, weights, ExpertIds::kGlobal}, out, stream, base, arena);
}

void LayerBackend::forward_routed(const HiddenStates& hidden, const TopKRouting& routing,
                                  const TensorView& out, cudaStream_t stream,
                                  const Workspace& workspace) const {
  const std::int64_t tokens = check_io(hidden, out);
  const std::int64_t k = config_.top_k();
  check_tensor(routing.topk_ids, "topk_ids", DType::kI32, {tokens, k}, tensor_device_);
  check_tensor(routing.topk_weights, "topk_weights", DType::kF32, {tokens, k}, tensor_device_);
  if (routing.expert_map.defined()) {
    check_arg(routing.ids == ExpertIds::kGlobal, "expert_map", "none with local ids", "a map");
    check_tensor(routing.expert_map, "expert_map", DType::kI32, {config_.num_experts},
                 tensor_device_);
  }
  if (tokens == 0) return;
  const Arena arena =
      make_arena(config_, local_experts_, tokens, layout_for(tokens), options_.overlap);
  check_workspace(workspace, arena, tokens);
  const ScopedDevice on_device(device_);
  run_routed(hidden, routing, out, stream, static_cast<std::byte*>(workspace.data), arena);
}

// The stages after routing; inputs checked, T > 0, the layer's device current.
void LayerBackend::run_routed(const HiddenStates& hidden, const TopKRouting& routing,
                              const TensorView& out, cudaStream_t stream, std::byte* base,
                              const Arena& arena) const {
  const std::int64_t tokens = hidden.data.size(0);
  const std::int64_t k = config_.top_k(), h = config_.hidden_size,
                     inter = config_.intermediate_size;
  const int experts = local_experts_;
  const DType act = config_.weight_dtype;
  const bool fp8 = config_.is_fp8();
  const Layout layout = layout_for(tokens);
  const bool masked = layout == Layout::kMasked;
  const Device device = tensor_device_;

  mark(static_cast<int>(Stage::kDispatchPermute), stream);
  TensorView local_ids = routing.topk_ids;
  if (routing.ids == ExpertIds::kGlobal) {
    local_ids = TensorView(base + arena.local_ids, DType::kI32, {tokens, k}, device);
    const LocalExperts placement =
        routing.expert_map.defined()
            ? LocalExperts{config_.num_experts, routing.expert_map, 0, experts}
        : expert_map_.defined()
            ? LocalExperts{config_.num_experts, expert_map_.view(), 0, experts}
            : LocalExperts{config_.num_experts, {}, config_.ep_rank * experts, experts};
    map_to_local(routing.topk_ids, placement, local_ids, stream);
  }

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
  const float scale = config_.output_scale;
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
    combine(down, permuted.src2dst, routing.topk_weights, out, scale, &wait, stream);
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
  combine(down, permuted.src2dst, routing.topk_weights, out, scale, nullptr, stream);
  mark(kNumStages, stream);
}

}  // namespace moerun::cuda
