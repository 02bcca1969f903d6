// CUDA stage 2: global expert ids -> this rank's local ids (DESIGN.md stage 2; oracle
// cpu/dispatch.h).
#pragma once

#include <cuda_runtime_api.h>

#include "moerun/tensor.h"

namespace moerun::cuda {

// topk_ids [T, k] i32 global ids in [-1, E) (device) -> local_ids [T, k] i32 in [0, E_l), or -1
// where another rank owns the expert or the slot was -1. Rank r owns [r * E_l, (r + 1) * E_l);
// local expert 0 is a real expert (`id >= 0` is the only "present" test downstream).
// The ids are not validated on the device: an id outside [-1, E) maps to -1 (skipped).
void map_to_local(const TensorView& topk_ids, int num_experts, int ep_size, int ep_rank,
                  const TensorView& local_ids, cudaStream_t stream);

}  // namespace moerun::cuda
