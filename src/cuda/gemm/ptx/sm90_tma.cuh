// Tensor memory accelerator (TMA) wrappers (sm_90): bulk tensor tile loads from global into shared
// memory that complete on an mbarrier. The CUtensorMap lives in kernel parameter space
// (`const __grid_constant__`), so its generic address is valid for the copy engine.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "cuda/gemm/ptx/sm90_mbarrier.cuh"

namespace moerun::cuda::sm90 {

__device__ __forceinline__ void tma_prefetch_descriptor(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<std::uint64_t>(map)) : "memory");
}

// Loads the box at coordinates (c0 innermost, c1, c2) of a 3-D tensor map into `dst` (aligned as
// the map's swizzle requires); elements outside the tensor are zero-filled and still counted in
// the transaction bytes of `bar`.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, std::uint64_t* bar,
                                            int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

}  // namespace moerun::cuda::sm90
