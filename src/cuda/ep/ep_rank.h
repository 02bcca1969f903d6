// One local rank of an EpLayerBackend: its context, weights, local buffers and events (internal to
// cuda/ep/ep_layer.cc and cuda/ep/ep_forward.cc).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "cuda/ep/ep_layer.h"
#include "cuda/ep/sync.h"
#include "cuda/layer.h"
#include "moerun/weights.h"

namespace moerun::cuda::ep {

// One local rank's state: its context, weights and the offsets of its local buffers.
struct EpLayerBackend::Rank {
  int rank = 0;
  MoeWeights weights;
  RankContext ctx;
  void* local = nullptr;  // device: every buffer below
  int *epoch = nullptr, *gave_up = nullptr, *scratch = nullptr, *slot_pos = nullptr;
  int *send_base = nullptr, *masked_m = nullptr, *recv_start = nullptr, *m_sum = nullptr;
  int *m_indices = nullptr, *combine_src2dst = nullptr, *counters = nullptr;
  void *gate_up_down = nullptr, *activation = nullptr;
  float* activation_scales = nullptr;
  std::unique_ptr<LayerBackend> standard;  // the standard backend's single-rank layer
  cudaEvent_t before_down = nullptr, overlap_done = nullptr;

  ~Rank() {
    if (before_down != nullptr) cudaEventDestroy(before_down);  // no throw from a destructor
    if (overlap_done != nullptr) cudaEventDestroy(overlap_done);
    if (local != nullptr) cudaFree(local);
  }
};

}  // namespace moerun::cuda::ep
