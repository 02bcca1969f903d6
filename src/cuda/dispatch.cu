// Dispatch id mapping: one thread per (token, slot).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/dispatch.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

struct MapParams {
  const int* ids;
  int* local;
  long long count;
  int num_experts;
  const int* expert_map;  // [E], or null: contiguous [first, first + local_experts)
  int first;
  int local_experts;
};

__global__ void map_to_local_kernel(MapParams p) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < p.count;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int id = p.ids[i];
    // -1 is the only skip; a `> 0` test here once dropped local expert 0.
    int local = -1;
    if (p.expert_map != nullptr) {
      if (id >= 0 && id < p.num_experts) local = p.expert_map[id];
    } else if (id >= p.first && id < p.first + p.local_experts) {
      local = id - p.first;
    }
    p.local[i] = local;
  }
}

}  // namespace

void map_to_local(const TensorView& topk_ids, const LocalExperts& experts,
                  const TensorView& local_ids, cudaStream_t stream) {
  check_arg(experts.num_experts > 0, "num_experts", "> 0", experts.num_experts);
  if (experts.expert_map.defined()) {
    check_tensor(experts.expert_map, "expert_map", DType::kI32, {experts.num_experts},
                 DeviceType::kCuda);
  } else {
    check_arg(experts.count >= 1 && experts.first >= 0 &&
                  experts.first + experts.count <= experts.num_experts,
              "local experts", "[first, first + count) within [0, E)",
              std::to_string(experts.first) + " + " + std::to_string(experts.count));
  }
  check_arg(topk_ids.ndim() == 2, "topk_ids rank", "2 ([T, k])", topk_ids.ndim());
  const std::int64_t tokens = topk_ids.size(0), k = topk_ids.size(1);
  check_tensor(topk_ids, "topk_ids", DType::kI32, {tokens, k}, DeviceType::kCuda);
  check_tensor(local_ids, "local_ids", DType::kI32, {tokens, k}, DeviceType::kCuda);
  const long long count = tokens * k;
  if (count == 0) return;
  const MapParams p{
      topk_ids.data_as<const int>(),
      local_ids.data_as<int>(),
      count,
      experts.num_experts,
      experts.expert_map.defined() ? experts.expert_map.data_as<const int>() : nullptr,
      experts.first,
      experts.count};
  constexpr int kThreads = 256;
  const long long blocks = std::min<long long>(ceil_div<long long>(count, kThreads), 4096);
  map_to_local_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda
