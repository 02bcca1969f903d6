// Tensor memory accelerator (TMA) wrappers (sm_90): bulk tensor tile loads from global into shared
// memory that complete on an mbarrier, and tile stores from shared into global memory tracked by
// bulk async-groups. The CUtensorMap lives in kernel parameter space
// (`const __grid_constant__`), so its generic address is valid for the copy engine.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "cuda/gemm/ptx/sm90_mbarrier.cuh"

namespace moerun::cuda::sm90 {

__device__ __forceinline__ void tma_prefetch_descriptor(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<std::uint64_t>(map)) : "memory");
}

// Loads the box at coordinates (c0 innermost, c1, c2) of a 3-D tensor map into shared-window
// address `dst` (aligned as the map's swizzle requires); elements outside the tensor are
// zero-filled and still counted in the transaction bytes of the barrier at `bar`.
__device__ __forceinline__ void tma_load_3d(std::uint32_t dst, const CUtensorMap* map,
                                            std::uint32_t bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// Stores the box at (c0, c1, c2) from `src` (laid out as the map's swizzle says); the parts of
// the box outside the tensor are not written. Completes asynchronously: commit, then wait.
__device__ __forceinline__ void tma_store_3d(const void* src, const CUtensorMap* map, int c0,
                                             int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];" ::"l"(
          reinterpret_cast<std::uint64_t>(map)),
      "r"(smem_addr(src)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// Closes the bulk async-group of this thread's stores issued so far.
__device__ __forceinline__ void tma_store_commit() {
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

// Waits until at most `kPending` of this thread's committed store groups are still reading their
// shared-memory source (the buffer may be rewritten once this returns).
template <int kPending>
__device__ __forceinline__ void tma_store_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(kPending) : "memory");
}

// Waits until this thread's committed store groups have completed: their writes are performed.
__device__ __forceinline__ void tma_store_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

// NOTE: generic-proxy writes to shared memory (st.shared, stmatrix) must be fenced by each writing
// thread before a barrier, after which the copy engine (async proxy) reads them.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

}  // namespace moerun::cuda::sm90
