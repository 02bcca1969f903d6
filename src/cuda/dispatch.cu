// Dispatch id mapping: one thread per (token, slot).
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/dispatch.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

__global__ void map_to_local_kernel(const int* __restrict__ ids, int* __restrict__ local,
                                    long long count, int first, int local_experts) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int id = ids[i];
    // -1 is the only skip; a `> 0` test here once dropped local expert 0.
    const bool owned = id >= first && id < first + local_experts;
    local[i] = owned ? id - first : -1;
  }
}

}  // namespace

void map_to_local(const TensorView& topk_ids, int num_experts, int ep_size, int ep_rank,
                  const TensorView& local_ids, cudaStream_t stream) {
  check_arg(ep_size >= 1 && num_experts % ep_size == 0, "ep_size",
            "a divisor of num_experts (" + std::to_string(num_experts) + ")", ep_size);
  check_arg(ep_rank >= 0 && ep_rank < ep_size, "ep_rank",
            "0 <= ep_rank < " + std::to_string(ep_size), ep_rank);
  check_arg(topk_ids.ndim() == 2, "topk_ids rank", "2 ([T, k])", topk_ids.ndim());
  const std::int64_t tokens = topk_ids.size(0), k = topk_ids.size(1);
  check_tensor(topk_ids, "topk_ids", DType::kI32, {tokens, k}, DeviceType::kCuda);
  check_tensor(local_ids, "local_ids", DType::kI32, {tokens, k}, DeviceType::kCuda);
  const long long count = tokens * k;
  if (count == 0) return;
  const int local_experts = num_experts / ep_size;
  constexpr int kThreads = 256;
  const long long blocks = std::min<long long>(ceil_div<long long>(count, kThreads), 4096);
  map_to_local_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      topk_ids.data_as<const int>(), local_ids.data_as<int>(), count, ep_rank * local_experts,
      local_experts);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda
