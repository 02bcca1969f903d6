// CUDA stage 2: global expert ids -> this rank's local ids (DESIGN.md stage 2; oracle
// cpu/dispatch.h).
#pragma once

#include <cuda_runtime_api.h>

#include "moerun/tensor.h"

namespace moerun::cuda {

// Where this rank's experts are among the E global ones.
struct LocalExperts {
  int num_experts = 0;    // E
  TensorView expert_map;  // [E] i32 on the device (moerun/expert_map.h); undefined: contiguous
  int first = 0;          // contiguous: this rank owns [first, first + count)
  int count = 0;
};

// topk_ids [T, k] i32 global ids in [-1, E) (device) -> local_ids [T, k] i32 in [0, E_l), or -1
// where another rank owns the expert or the slot was -1. Local expert 0 is a real expert (`id >=
// 0` is the only "present" test downstream). The ids are not validated on the device: an id
// outside [-1, E) maps to -1 (skipped).
void map_to_local(const TensorView& topk_ids, const LocalExperts& experts,
                  const TensorView& local_ids, cudaStream_t stream);

}  // namespace moerun::cuda
