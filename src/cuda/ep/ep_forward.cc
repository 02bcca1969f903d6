// EpLayerBackend's forwards: every local rank's kernels, phase by phase.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "cuda/combine.h"
#include "cuda/cuda_check.h"
#include "cuda/ep/combine.h"
#include "cuda/ep/dispatch.h"
#include "cuda/ep/ep_layer.h"
#include "cuda/ep/ep_rank.h"
#include "cuda/ep/experts.h"
#include "cuda/ep/reduce.h"
#include "cuda/ep/route.h"
#include "cuda/ep/sync.h"
#include "cuda/gemm_shape.h"
#include "cuda/layer.h"
#include "moerun/errors.h"

namespace moerun::cuda::ep {

namespace {
const Device kDevice{DeviceType::kCuda, 0};
}  // namespace

void EpLayerBackend::forward_all_to_all(std::span<const EpRankIO> io, cudaStream_t stream) {
  const int experts = config_.num_experts, local = config_.num_local_experts();
  const int k = config_.top_k();
  const std::int64_t h = config_.hidden_size, inter = config_.intermediate_size;
  const bool masked = layout_ == Layout::kMasked, fp8 = config_.is_fp8();
  const PlacementTables& tables = tables_;
  const ReceiveOffsets receive{window_.tokens, window_.scales, window_.origin};
  const std::int64_t rows = masked ? local * m_max_ : capacity_;

  // 1. Counts to every rank, then each rank's layout and its rows into the owners' layouts.
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    begin_forward(r.ctx, stream);
    route_slots(r.ctx, tables, io[i].topk_ids.data_as<const int>(), io[i].topk_ids.numel(),
                window_.counts, r.scratch, r.slot_pos, stream);
  }
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    derive_layout(r.ctx, tables, window_.counts, layout_, m_max_, capacity_,
                  {r.masked_m, r.recv_start, r.m_sum, masked ? nullptr : r.m_indices, r.send_base},
                  stream);
    DispatchArgs d;
    d.hidden = static_cast<const std::uint16_t*>(io[i].hidden.data());
    d.topk_ids = io[i].topk_ids.data_as<const int>();
    d.slot_pos = r.slot_pos;
    d.send_base = r.send_base;
    d.tokens = io[i].hidden.size(0);
    d.top_k = k;
    d.hidden_size = static_cast<int>(h);
    d.fp8 = fp8;
    d.slot_stride = slot_stride_;
    d.scale_rows = masked ? m_max_ : capacity_;
    d.combine_src2dst = r.combine_src2dst;
    dispatch_tokens(r.ctx, tables, receive, d, stream);
  }
  for (const auto& r : ranks_) wait_peers(r->ctx, Phase::kDispatch, 0, stream);
  mark(1, stream);

  // 2. The experts, each rank on what it received.
  const DType act = config_.weight_dtype;
  auto view = [&](void* p, DType dtype, std::int64_t cols) {
    return masked ? TensorView(p, dtype, {local, m_max_, cols}, kDevice)
                  : TensorView(p, dtype, {capacity_, cols}, kDevice);
  };
  // FP8 activation scales, MN-major (core/scale_layout.h).
  auto scale_view = [&](void* p, std::int64_t k_blocks) {
    return masked ? TensorView(p, DType::kF32, {local, k_blocks, m_max_}, kDevice)
                  : TensorView(p, DType::kF32, {k_blocks, capacity_}, kDevice);
  };
  std::vector<CombineSendArgs> sends(io.size());
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    char* window = r.ctx.window;
    ExpertBuffers b;
    b.layout = layout_;
    b.tokens = view(window + window_.tokens, act, h);
    if (fp8) b.token_scales = scale_view(window + window_.scales, h / kQuantGroup);
    b.masked_m = TensorView(r.masked_m, DType::kI32, {local}, kDevice);
    if (!masked) b.m_indices = TensorView(r.m_indices, DType::kI32, {capacity_}, kDevice);
    b.gate_up = view(r.gate_up_down, DType::kBF16, 2 * inter);
    b.activation = view(r.activation, act, inter);
    if (fp8) b.activation_scales = scale_view(r.activation_scales, inter / kQuantGroup);
    b.down = view(r.gate_up_down, DType::kBF16, h);
    b.m_max = m_max_;
    b.max_rows_with_tokens = std::min<std::int64_t>(rows, slot_stride_ * transport_->num_ranks());
    b.expected_m =
        ceil_div<std::int64_t>(io[i].topk_ids.numel() * transport_->num_ranks(), experts);
    gate_up_and_activation(r.weights, b, stream);

    CombineSendArgs& s = sends[i];
    s.layout = layout_;
    s.down = static_cast<const std::uint16_t*>(r.gate_up_down);
    s.origin = reinterpret_cast<const int*>(window + window_.origin);
    s.masked_m = r.masked_m;
    s.m_indices = masked ? nullptr : r.m_indices;
    s.m_sum = r.m_sum;
    s.local_experts = local;
    s.m_max = m_max_;
    s.capacity = capacity_;
    s.hidden_size = static_cast<int>(h);
    s.slot_stride = slot_stride_;
    s.return_offset = window_.returned;
    s.gave_up = r.gave_up;
    if (r.counters == nullptr) {
      down_projection(r.weights, b, nullptr, stream);  // no signal, no report
      continue;
    }
    const std::int64_t counter_count = local * (m_max_ / kGemmBlockM);
    MOERUN_CUDA_CHECK(cudaMemsetAsync(r.counters, 0, sizeof(int) * counter_count, stream));
    MOERUN_CUDA_CHECK(cudaEventRecord(r.before_down, stream));
    const OverlapSignal signal{TensorView(r.counters, DType::kI32, {counter_count}, kDevice),
                               kGemmBlockM, kOverlapCtas};
    const std::optional<OverlapReport> report = down_projection(r.weights, b, &signal, stream);
    if (!report || report->block_m != kCombineBlockRows) {
      throw Error("the down GEMM was asked for an overlap report of 64-row blocks and gave " +
                  (report ? std::to_string(report->block_m) + "-row blocks" : "none"));
    }
    s.counters = r.counters;
    s.threshold = report->threshold;
    // The sends start once everything before the GEMM is done; the GEMM is already enqueued.
    MOERUN_CUDA_CHECK(cudaStreamWaitEvent(overlap_stream_, r.before_down, 0));
    send_results_overlapped(r.ctx, s, static_cast<std::uint64_t>(options_.overlap_patience_s * 1e9),
                            overlap_stream_);
    MOERUN_CUDA_CHECK(cudaEventRecord(r.overlap_done, overlap_stream_));
  }
  mark(2, stream);

  // 3. Results back to their sources, then each source's combine.
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    if (r.counters != nullptr) {
      MOERUN_CUDA_CHECK(cudaStreamWaitEvent(stream, r.overlap_done, 0));
      finish_sending_results(r.ctx, sends[i], stream);
    } else {
      send_results(r.ctx, sends[i], stream);
    }
  }
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    wait_peers(r.ctx, Phase::kCombine, 0, stream);
    const std::int64_t tokens = io[i].hidden.size(0);
    const TensorView returned(r.ctx.window + window_.returned, DType::kBF16, {tokens * k, h},
                              kDevice);
    const TensorView src2dst(r.combine_src2dst, DType::kI32, {tokens, k}, kDevice);
    combine(returned, src2dst, io[i].topk_weights, io[i].out, config_.output_scale, nullptr,
            stream);
  }
}

void EpLayerBackend::forward_standard(std::span<const EpRankIO> io, cudaStream_t stream) {
  const std::int64_t h = config_.hidden_size;
  const bool collectives = transport_->has_collectives();
  const int ranks = transport_->num_ranks();
  const std::int64_t tokens = io[0].hidden.size(0);
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    begin_forward(r.ctx, stream);
    // The peers must be done reading this rank's previous partial before it is overwritten.
    if (!collectives) wait_peers(r.ctx, Phase::kReduced, -1, stream);
  }
  mark(1, stream);
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    const TensorView partial(r.ctx.window + window_.partial, DType::kF32, {tokens, h}, kDevice);
    // The rank's own layer maps the global ids through the rank's expert_map.
    r.standard->forward_routed(io[i].hidden, TopKRouting{io[i].topk_ids, io[i].topk_weights},
                               partial, stream, r.standard->owned_workspace());
    if (!collectives) signal_peers(r.ctx, Phase::kPartial, stream);
  }
  mark(2, stream);
  const std::int64_t shard = options_.shard_output ? tokens / ranks : tokens;
  for (std::size_t i = 0; i < io.size(); ++i) {
    Rank& r = *ranks_[i];
    const std::int64_t first = options_.shard_output ? r.rank * shard : 0;
    auto* out = static_cast<std::uint16_t*>(io[i].out.data());
    if (collectives) {
      auto* partial = reinterpret_cast<float*>(r.ctx.window + window_.partial);
      const int index = static_cast<int>(i);
      if (options_.shard_output) {
        transport_->reduce_scatter_sum(index, partial, static_cast<std::size_t>(shard * h), stream);
      } else {
        transport_->all_reduce_sum(index, partial, static_cast<std::size_t>(tokens * h), stream);
      }
      round_to_bf16(partial + first * h, shard * h, out, stream);
      continue;
    }
    wait_peers(r.ctx, Phase::kPartial, 0, stream);
    sum_partials(r.ctx, window_.partial, first, shard, static_cast<int>(h), out, stream);
    signal_peers(r.ctx, Phase::kReduced, stream);
  }
}

}  // namespace moerun::cuda::ep
