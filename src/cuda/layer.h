// The CUDA backend of moerun::Layer: all stages on one stream, workspace allocated once.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "cuda/finite_check.h"
#include "cuda/stages.h"
#include "moerun/config.h"
#include "moerun/layer.h"
#include "moerun/tensor.h"
#include "moerun/weights.h"

namespace moerun::cuda {

// Tokens up to which LayoutChoice::kAuto uses the masked layout: its GEMMs then have at most
// M_max = 128 rows per expert, and its launches never depend on the routing.
inline constexpr std::int64_t kMaskedMaxTokens = 128;

// Events a forward records at the stage boundaries: [s] when stage s starts, [kNumStages] when
// the layer ends (forward_routed starts at kDispatchPermute and leaves [kRouting] alone). Inside a
// stream capture they become external event nodes, so graph replays record them too.
using StageEvents = std::array<cudaEvent_t, kNumStages + 1>;

// How the layer's one allocation is used for a given token cap.
struct WorkspacePlan {
  std::int64_t max_tokens = 0;
  std::int64_t masked_max_tokens = 0;      // 0: the masked layout is never used
  std::int64_t contiguous_max_tokens = 0;  // 0: the contiguous layout is never used
  std::size_t bytes = 0;
};

// The plan for `options` (layout choice, max_tokens, workspace_limit_bytes); rejects a budget
// that cannot hold the layout asked for, naming both sizes.
WorkspacePlan plan_workspace(const MoeConfig& config, const LayerOptions& options);

class LayerBackend {
 public:
  // `weights` are device views of this rank's E_l experts; they must outlive the layer. With
  // options.check_finite their values are checked here (this waits for the device).
  LayerBackend(const MoeConfig& config, const MoeWeights& weights, const LayerOptions& options);
  ~LayerBackend();
  LayerBackend(const LayerBackend&) = delete;
  LayerBackend& operator=(const LayerBackend&) = delete;

  std::size_t workspace_bytes() const { return plan_.bytes; }
  // Benchmarks: events to record at the stage boundaries of later forwards (null: none). The
  // caller keeps them alive while set.
  void set_stage_events(const StageEvents* events) { stage_events_ = events; }
  Layout layout_for(std::int64_t tokens) const;

  // All tensors on the device; enqueued on `stream`, no synchronization. The launch sequence
  // depends on T only (never on the routing), so a forward can be captured in a CUDA graph and
  // replayed with new inputs of the same T.
  void forward(const TensorView& hidden, const TensorView& router_logits, const TensorView& out,
               cudaStream_t stream);
  void forward_routed(const TensorView& hidden, const TensorView& topk_ids,
                      const TensorView& topk_weights, const TensorView& out, cudaStream_t stream);
  // Layer::report_pending_errors: throws what the checks of earlier forwards found, without
  // waiting. Both forwards call it first.
  void report_pending_errors();

 private:
  // The forward after the input checks: dispatch and permute to the combine.
  void run_routed(const TensorView& hidden, const TensorView& topk_ids,
                  const TensorView& topk_weights, const TensorView& out, cudaStream_t stream);
  void check_io(const TensorView& hidden, const TensorView& out) const;
  // Records the event of boundary `index` (a Stage, or kNumStages for the end) when set.
  void mark(int index, cudaStream_t stream) const;

  MoeConfig config_;
  MoeWeights weights_;
  LayerOptions options_;
  WorkspacePlan plan_;
  void* workspace_ = nullptr;
  const StageEvents* stage_events_ = nullptr;
  std::unique_ptr<FiniteCheck> finite_check_;  // with options.check_finite
};

}  // namespace moerun::cuda
