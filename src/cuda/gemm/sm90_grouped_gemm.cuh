// The Hopper grouped GEMM kernel (sm_90a): out[rows, N] = A[rows, K] * B[expert, N, K]^T in bf16,
// for BF16 operands (fp32 accumulation) and for FP8 e4m3 operands with DeepSeek-V3's block scales
// (A: one fp32 per row per 128 K, MN-major, core/scale_layout.h; B: one per 128 x 128 block,
// [E, N / 128, K / 128]), in the masked and the contiguous layout (DESIGN.md).
//
// Launch: a persistent grid (one CTA per SM), 128 * (BLOCK_M / 64 + 1) threads, dynamic shared
// memory Traits::kSmemBytes. Warp roles:
//  - warpgroups 0 .. BLOCK_M/64 - 1, the math warpgroups: warpgroup w owns rows [64 w, 64 w + 64)
//    of the tile; per K block it waits for the stage, issues wgmma m64nNk16 (BF16, HGMMA) or
//    m64nNk32 (e4m3, QGMMA) from shared memory into fp32 registers, and frees the stage;
//  - the last warpgroup's first warp, the producer (sm90_producer.cuh): it walks the tiles and
//    fills a kNumStages-deep ring of stages (full / empty mbarriers, carried across tiles) with
//    the TMA loads of A and B and, FP8, the stage's activation scales (TMA, BLOCK_M floats) and
//    weight scales; each stage also carries its tile (StageInfo, sm90_traits.cuh), so the math
//    warps (sm90_consumer.cuh) never walk the scheduler.
// With two math warpgroups, setmaxnreg moves registers from the producer (40) to them (232).
// With clusters of 2 along M the pair shares the B tile by multicast (sm90_scheduler.cuh).
//
// The math warps' instruction stream is kept short (FP8's tensor core finishes a warpgroup's K
// block in 256 cycles at N 128, and the other warpgroup must be ready by then): descriptors are
// warp-uniform (the warpgroup index is broadcast, only their low words move) and every scale is
// in shared memory, so no global load sits on the wgmma issue path.
//
// FP8 numerics (the oracle's, cpu/gemm.cc): per 128-wide K block, wgmma into a fresh fp32
// partial (scale-d = 0 on its first k32 step), wait for it, then acc = fma(partial, a_scale[row] *
// b_scale, acc). BF16: one fp32 accumulator over all of K. Every output element's sequence of
// operations is the same whatever the tile shape or the row's position, so layouts agree bit for
// bit.
//
// Epilogue: sm90_epilogue.cuh (stmatrix into swizzled atoms, TMA stores of full atoms, 16-byte
// stores of rows that hold a token otherwise). Masked overlap: after its stores each math
// warpgroup adds 1, with release ordering at device scope, to the counter of its 64-row block (a
// row block is complete at ceil(N / BLOCK_N)).
//
// Assumptions (checked on the host): K-major A and B with 16-byte aligned rows; N % 8 == 0; FP8:
// N % 128 == 0 and K % 128 == 0; masked M_max % 64 == 0; contiguous segments 128-aligned.
// Rows of A that hold no token (masked rows >= masked_m inside a tile's last row block, contiguous
// padding rows) are loaded by TMA with their tile, scales included, but only ever meet their own
// outputs, which are never stored.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/gemm/ptx/sm90_cluster.cuh"
#include "cuda/gemm/ptx/sm90_mbarrier.cuh"
#include "cuda/gemm/ptx/sm90_tma.cuh"
#include "cuda/gemm/ptx/sm90_warpgroup.cuh"
#include "cuda/gemm/sm90_consumer.cuh"
#include "cuda/gemm/sm90_params.h"
#include "cuda/gemm/sm90_producer.cuh"
#include "cuda/gemm/sm90_traits.cuh"
#include "cuda/per_device.h"

namespace moerun::cuda::sm90 {

// Contiguous layout: one past the last row block whose first row is a local expert (all threads
// of the CTA call it; `slot` is a shared int set to 0 before a barrier).
template <int BLOCK_M>
__device__ __forceinline__ void find_used_row_blocks(const GroupedGemmParams& p, int* slot) {
  int last = 0;
  for (int b = static_cast<int>(threadIdx.x); b < p.m_row_blocks; b += blockDim.x) {
    const int e = __ldg(p.m_indices + static_cast<long long>(b) * BLOCK_M);
    if (e >= 0 && e < p.experts) last = b + 1;
  }
  last = __reduce_max_sync(0xffffffffu, static_cast<unsigned>(last));
  if (threadIdx.x % 32 == 0 && last > 0) atomicMax(slot, last);
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    grouped_gemm_kernel(const __grid_constant__ GroupedGemmMaps maps,
                        const __grid_constant__ GroupedGemmParams p) {
  constexpr int BLOCK_M = Traits::BLOCK_M, kNumStages = Traits::kNumStages;

  // NOTE: no static shared memory, so the dynamic buffer starts at the (1024-aligned) window base.
  extern __shared__ __align__(1024) std::uint8_t smem[];
  using L = SmemLayout<Traits>;
  auto* full = reinterpret_cast<std::uint64_t*>(smem + L::kFull);
  auto* empty = reinterpret_cast<std::uint64_t*>(smem + L::kEmpty);
  int& used_row_blocks = *reinterpret_cast<int*>(smem + L::kUsedRowBlocks);

  // NOTE: broadcast from lane 0 so that ptxas knows the warpgroup index, and everything derived
  // from it (the wgmma descriptors), is warp-uniform.
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  const int thread = static_cast<int>(threadIdx.x);
  if (thread == Traits::kNumMathThreads) {
    if (smem_addr(smem) % 1024 != 0) __trap();  // the swizzle atoms need it
    tma_prefetch_descriptor(&maps.a);
    tma_prefetch_descriptor(&maps.b);
    if constexpr (Traits::kIsFp8) tma_prefetch_descriptor(&maps.a_scale);
    for (int s = 0; s < kNumStages; ++s) {
      mbarrier_init(&full[s], 1);  // the producer's arrive.expect_tx (+ the TMA bytes)
      // One arrival per math thread of every CTA of the cluster (a shared B tile is written into
      // all of them).
      mbarrier_init(&empty[s], Traits::kNumMathThreads * Traits::kClusterM);
    }
    mbarrier_init_fence();
  }
  if (thread == 0) used_row_blocks = 0;
  __syncthreads();
  if (p.masked_m == nullptr) {
    find_used_row_blocks<BLOCK_M>(p, &used_row_blocks);
    __syncthreads();
  }
  // The peer's barriers are initialized before anyone multicasts into them or arrives on them.
  if constexpr (Traits::kClusterM > 1) cluster_sync();
  if (warpgroup == Traits::kNumMathWarpgroups) {
    // ---- Producer: one thread walks the tiles and fills the stages. ----
    if constexpr (Traits::kNumMathWarpgroups > 1) warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (thread / 32 == Traits::kNumMathThreads / 32) {  // the producer warpgroup's first warp
      produce<Traits>(maps, p, used_row_blocks, smem_addr(smem));
    }
  } else {
    consume<Traits>(maps, p, smem);
  }
  // No CTA leaves while its peer may still multicast into it or arrive on its barriers (every
  // thread; the producer's lane rejoins its warp first: the barrier is .aligned).
  if constexpr (Traits::kClusterM > 1) {
    __syncwarp();
    cluster_sync();
  }
}

// Host side of one kernel variant: a persistent grid of at most `num_sms` CTAs (with clusters, no
// more clusters than can be resident at once), shared memory raised to what the variant needs
// (once per device: not stream operations, so later launches may be captured in a CUDA graph). A
// CTA without tiles exits at once; fewer CTAs than SMs leave the rest to concurrent kernels.
template <class Traits>
void launch_grouped_gemm(const GroupedGemmMaps& maps, const GroupedGemmParams& p, int num_sms,
                         cudaStream_t stream) {
  auto* kernel = &grouped_gemm_kernel<Traits>;
  constexpr int kClusterM = Traits::kClusterM;
  // The most CTAs resident at once, once per device (kept out of graph captures after first use).
  static PerDevice<int> resident_of_device;
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kClusterM;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.blockDim = dim3(Traits::kNumThreads);
  config.dynamicSmemBytes = Traits::kSmemBytes;
  config.stream = stream;
  config.attrs = &cluster;
  config.numAttrs = kClusterM > 1 ? 1 : 0;
  const int resident = resident_of_device.get([&](int device) {
    MOERUN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Traits::kSmemBytes));
    int sms = 0;
    MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    int full = sms / kClusterM * kClusterM;
    if constexpr (kClusterM > 1) {
      // NOTE: clusters are placed within a GPC, so fewer than SMs / 2 may fit at once; a
      // persistent grid larger than that would run its last clusters in a second wave.
      config.gridDim = dim3(static_cast<unsigned>(full));
      int clusters = 0;
      MOERUN_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
      if (clusters > 0) full = std::min(full, clusters * kClusterM);
    }
    return full;
  });
  const int grid = std::max(kClusterM, std::min(resident, num_sms / kClusterM * kClusterM));
  config.gridDim = dim3(static_cast<unsigned>(grid));
  MOERUN_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, maps, p));
}

}  // namespace moerun::cuda::sm90
