// The CUDA expert-parallel layer (moerun::EpLayer's backend): one or more local ranks of a group,
// both backends, over any Transport. Every local rank's kernels are enqueued phase by phase (every
// rank's sends of a phase before any rank's receives), so with virtual ranks each wait finds its
// data already there, and with one rank per process the order is simply the rank's own.
//
// All-to-all, per forward: route (counts to every rank) -> layout (once all counts are in) ->
// dispatch (rows into the owners' layouts) -> wait -> gate-up GEMM, SiLU-and-mul, down GEMM (with
// single-batch overlap: the combine's sends on a second stream) -> send results back -> wait ->
// combine at the source (cuda/combine.h, the single-rank kernel).
// Standard, per forward: ids to the contiguous placement -> the single-rank layer
// (cuda/layer.h) into an f32 partial -> all-reduce / reduce-scatter (NCCL) or moerun's rank-order
// sum over the peers' windows.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "core/expert_placement.h"
#include "cuda/ep/route.h"
#include "cuda/ep/sync.h"
#include "cuda/ep/transport.h"
#include "moerun/config.h"
#include "moerun/ep.h"
#include "moerun/weights.h"

namespace moerun::cuda::ep {

// Events a forward records: [0] start, [1] dispatch done, [2] expert compute done, [3] end.
inline constexpr int kNumEpPhases = 3;  // dispatch, experts, combine
using PhaseEvents = std::array<cudaEvent_t, kNumEpPhases + 1>;

class EpLayerBackend {
 public:
  EpLayerBackend(std::shared_ptr<Transport> transport, const MoeConfig& config,
                 const std::vector<MoeWeights>& local_weights, const EpOptions& options);
  ~EpLayerBackend();
  EpLayerBackend(const EpLayerBackend&) = delete;
  EpLayerBackend& operator=(const EpLayerBackend&) = delete;

  Layout layout() const { return layout_; }
  const ExpertPlacement& placement() const { return placement_; }
  std::size_t workspace_bytes() const { return workspace_bytes_; }
  // Rows a rank can receive (masked: per expert) and the window bytes per rank.
  std::int64_t receive_capacity() const;
  std::size_t window_bytes() const;

  void forward_routed(std::span<const EpRankIO> ranks, cudaStream_t stream);
  // After a synchronization: throws the first recorded device-side failure, then clears it.
  void check();
  // Benchmarks: events to record at the phase boundaries of later forwards (null: none).
  void set_phase_events(const PhaseEvents* events) { phase_events_ = events; }
  // After a synchronization: overlap CTAs that left blocks to the finishing pass, summed over the
  // local ranks since construction (0 when the overlap always kept up).
  int overlap_fallbacks() const;

 private:
  struct Rank;
  void check_io(std::span<const EpRankIO> ranks) const;
  void forward_all_to_all(std::span<const EpRankIO> ranks, cudaStream_t stream);
  void forward_standard(std::span<const EpRankIO> ranks, cudaStream_t stream);
  void mark(int index, cudaStream_t stream) const;

  std::shared_ptr<Transport> transport_;
  MoeConfig config_;
  EpOptions options_;
  ExpertPlacement placement_;
  Layout layout_ = Layout::kMasked;
  std::int64_t slot_stride_ = 0;  // T_max * k: rows of every rank's returned-results buffer
  std::int64_t m_max_ = 0;        // all-to-all masked: rows per local expert
  std::int64_t capacity_ = 0;     // all-to-all: rows of a rank's layout
  std::size_t workspace_bytes_ = 0;
  struct Offsets {
    std::size_t flags = 0, counts = 0, tokens = 0, scales = 0, origin = 0, returned = 0,
                partial = 0, total = 0;
  } window_;
  std::unique_ptr<Windows> windows_;
  void* shared_ = nullptr;  // device: placement tables and the error record
  PlacementTables tables_;
  DeviceError* error_ = nullptr;
  std::vector<std::unique_ptr<Rank>> ranks_;
  cudaStream_t overlap_stream_ = nullptr;
  const PhaseEvents* phase_events_ = nullptr;
};

}  // namespace moerun::cuda::ep
