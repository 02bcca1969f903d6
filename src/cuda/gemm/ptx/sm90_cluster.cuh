// Thread block cluster wrappers (sm_90): the cluster-wide barrier, arrivals on a peer CTA's
// mbarrier, and the multicast form of the TMA tile load (one load, written into the shared memory
// of every CTA in `cta_mask` at the same offset, completing on each one's mbarrier there).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "cuda/gemm/ptx/sm90_mbarrier.cuh"

namespace moerun::cuda::sm90 {

// Every thread of every CTA in the cluster; orders shared-memory accesses across the cluster.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
}

__device__ __forceinline__ std::uint32_t cluster_cta_rank() {
  std::uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

// One arrival on the mbarrier at shared-window address `bar` of CTA `cta_rank` of the cluster
// (this CTA included). It tells a producer that this warp's wgmmas have finished reading a stage
// (wgmma_wait), which is all the ordering the ring needs, so it has the default semantics
// (release at CTA scope).
// NOTE: `.release.cluster` here compiled to MEMBAR.ALL.CTA + MEMBAR.ALL.GPU before every arrival
// (sm_90a, nvcc 13.0): a full memory barrier per warp per K block, which halved the speed of the
// cluster variants (every shape, even a lone cluster on an idle GPU).
__device__ __forceinline__ void mbarrier_arrive_cluster(std::uint32_t bar, std::uint32_t cta_rank) {
  asm volatile(
      "{\n"
      ".reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(bar),
      "r"(cta_rank)
      : "memory");
}

// The tile load of sm90_tma.cuh, multicast to the CTAs of `cta_mask` (same shared-memory offset,
// completing on each one's barrier at `bar`'s offset).
__device__ __forceinline__ void tma_load_3d_multicast(std::uint32_t dst, const CUtensorMap* map,
                                                      std::uint32_t bar, int c0, int c1, int c2,
                                                      std::uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%3, %4, %5}], [%2], %6;" ::"r"(dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2),
      "h"(cta_mask)
      : "memory");
}

}  // namespace moerun::cuda::sm90
