// The CUDA backend of moerun::Layer: all stages on the caller's stream, in the caller's workspace,
// on the weights' device.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "cuda/device_memory.h"
#include "cuda/stages.h"
#include "cuda/workspace.h"
#include "moerun/config.h"
#include "moerun/forward.h"
#include "moerun/layer.h"
#include "moerun/tensor.h"
#include "moerun/weights.h"

namespace moerun::cuda {

// Events a forward records at the stage boundaries: [s] when stage s starts, [kNumStages] when
// the layer ends (forward_routed starts at kDispatchPermute and leaves [kRouting] alone). Inside a
// stream capture they become external event nodes, so graph replays record them too.
using StageEvents = std::array<cudaEvent_t, kNumStages + 1>;

class LayerBackend {
 public:
  // `weights` are device views of this rank's E_l experts, all on one device (the layer's); they
  // must outlive the layer. Allocates the convenience workspace (options.own_workspace) and a
  // device copy of config.expert_map (when given), nothing else.
  LayerBackend(const MoeConfig& config, const MoeWeights& weights, const LayerOptions& options);
  LayerBackend(const LayerBackend&) = delete;
  LayerBackend& operator=(const LayerBackend&) = delete;

  int device() const { return device_; }
  Layout layout_for(std::int64_t tokens) const { return plan_.layout_for(tokens); }
  // What every forward of at most `tokens` tokens needs.
  std::size_t workspace_bytes_for(std::int64_t tokens) const;
  // The workspace allocated at construction ({nullptr, 0} without own_workspace).
  Workspace owned_workspace() const { return {workspace_.get(), owned_bytes_}; }
  // Benchmarks: events to record at the stage boundaries of later forwards (null: none). The
  // caller keeps them alive while set, and runs one forward at a time while they are.
  void set_stage_events(const StageEvents* events) { stage_events_ = events; }

  // All tensors on the layer's device; enqueued on `stream` in `workspace`, no allocation, no
  // synchronization, no state written. The launch sequence depends on T only (never on the
  // routing), so a forward can be captured in a CUDA graph and replayed with new inputs of the
  // same T.
  void forward(const HiddenStates& hidden, const TensorView& router_logits, const TensorView& out,
               cudaStream_t stream, const Workspace& workspace) const;
  void forward_routed(const HiddenStates& hidden, const TopKRouting& routing, const TensorView& out,
                      cudaStream_t stream, const Workspace& workspace) const;
  // The same in the owned workspace (benchmarks).
  void forward(const HiddenStates& hidden, const TensorView& router_logits, const TensorView& out,
               cudaStream_t stream) const {
    forward(hidden, router_logits, out, stream, owned_workspace());
  }

 private:
  // Checks hidden (bf16, or pre-quantized FP8) and out; returns T.
  std::int64_t check_io(const HiddenStates& hidden, const TensorView& out) const;
  // Rejects a workspace too small or misaligned for a forward of T tokens.
  void check_workspace(const Workspace& workspace, const Arena& arena, std::int64_t tokens) const;
  // The stages after routing, in the workspace at `base` laid out as `arena`.
  void run_routed(const HiddenStates& hidden, const TopKRouting& routing, const TensorView& out,
                  cudaStream_t stream, std::byte* base, const Arena& arena) const;
  // Records the event of boundary `index` (a Stage, or kNumStages for the end) when set.
  void mark(int index, cudaStream_t stream) const;

  MoeConfig config_;
  MoeWeights weights_;
  LayerOptions options_;
  WorkspacePlan plan_;
  int device_ = 0;
  int local_experts_ = 0;
  Device tensor_device_;
  DeviceBuffer expert_map_;  // [E] i32, only with config.expert_map
  struct FreeDevice {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, FreeDevice> workspace_;  // own_workspace only
  std::size_t owned_bytes_ = 0;
  const StageEvents* stage_events_ = nullptr;
};

}  // namespace moerun::cuda
