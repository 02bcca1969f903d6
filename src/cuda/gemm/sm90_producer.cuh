// The grouped GEMM's producer warp (sm90_grouped_gemm.cuh has the kernel's overview).
#pragma once

#include <cstdint>

#include "cuda/gemm/ptx/sm90_cluster.cuh"
#include "cuda/gemm/ptx/sm90_mbarrier.cuh"
#include "cuda/gemm/ptx/sm90_tma.cuh"
#include "cuda/gemm/sm90_params.h"
#include "cuda/gemm/sm90_scheduler.cuh"
#include "cuda/gemm/sm90_traits.cuh"

namespace moerun::cuda::sm90 {

// The producer warp: walks the tiles and fills the stages (lane 0 issues the copies and the
// arrivals), then hands the math warps one more stage whose info says that no tiles are left.
// FP8 weight scales: every 32 K blocks the 32 lanes load the next 32 scales of each of the tile's
// (at most two) 128-column blocks at once, and lane 0 takes its stage's from them by shuffle, so
// that an L2 round trip is paid once per 32 stages and absorbed by the ring (one load per stage,
// waited for before the stage's arrival, made the producer the bottleneck). Shared memory by
// 32-bit window addresses (`smem`: the base), to fit the 40 registers setmaxnreg leaves.
template <class Traits>
__device__ __forceinline__ void produce(const GroupedGemmMaps& maps, const GroupedGemmParams& p,
                                        int used_row_blocks, std::uint32_t smem) {
  constexpr int BLOCK_M = Traits::BLOCK_M, BLOCK_N = Traits::BLOCK_N, BLOCK_K = Traits::BLOCK_K;
  using L = SmemLayout<Traits>;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  Scheduler<BLOCK_M, Traits::kClusterM> scheduler(used_row_blocks);
  RingPosition ring;
  Tile tile;
  while (scheduler.next(p, tile)) {
    if (tile.expert == Tile::kDummy) {
      // Cluster peer of a tile: hand the math warps k_blocks empty stages (nothing to load).
#pragma unroll 1
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        mbarrier_wait(smem + L::kEmpty + ring.stage * 8, ring.phase ^ 1);
        if (lane == 0) {
          asm volatile("st.shared.s32 [%0], %1;" ::"r"(smem + L::kInfo +
                                                       ring.stage * Traits::kSmemInfoBytes),
                       "r"(Tile::kDummy)
                       : "memory");
          mbarrier_arrive_expect_tx(smem + L::kFull + ring.stage * 8, 0);
        }
        __syncwarp();
        ring.advance<Traits::kNumStages>();
      }
      continue;
    }
    const int n0 = tile.n_block * BLOCK_N;
    const int a_group = tile.a_group(p);
    const int valid_rows = p.masked_m != nullptr ? tile.masked_valid_rows(p, BLOCK_M) : BLOCK_M;
    // FP8: element offsets of the weight-scale rows of the tile's first and last 128-column blocks
    // in b_scale (32-bit: the host checks E * N/128 * K/128 < 2^31).
    int b_scale0 = 0, b_scale1 = 0;
    if constexpr (Traits::kIsFp8) {
      const int blocks_n = p.n / 128;
      const int first = n0 / 128, last = min((n0 + BLOCK_N - 1) / 128, blocks_n - 1);
      b_scale0 = (tile.expert * blocks_n + first) * p.k_blocks;
      b_scale1 = (tile.expert * blocks_n + last) * p.k_blocks;
    }
    float chunk0 = 0.0f, chunk1 = 0.0f;  // FP8: lane l's scales of K block 32 (kb / 32) + l
    // NOTE: not unrolled: the producer has 40 registers, and an unrolled loop spilled them.
#pragma unroll 1
    for (int kb = 0; kb < p.k_blocks; ++kb) {
      if constexpr (Traits::kIsFp8) {
        if (kb % 32 == 0) {
          const int k = kb + lane;
          chunk0 = k < p.k_blocks ? __ldg(p.b_scale + b_scale0 + k) : 0.0f;
          chunk1 = k < p.k_blocks ? __ldg(p.b_scale + b_scale1 + k) : 0.0f;
        }
      }
      const float sb0 = __shfl_sync(0xffffffffu, chunk0, kb % 32);
      const float sb1 = __shfl_sync(0xffffffffu, chunk1, kb % 32);
      mbarrier_wait(smem + L::kEmpty + ring.stage * 8, ring.phase ^ 1);
      if (lane == 0) {
        // Plain stores, published to the math warps by the arrival below (release semantics).
        const std::uint32_t info = smem + L::kInfo + ring.stage * Traits::kSmemInfoBytes;
        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};" ::"r"(info), "r"(tile.expert),
                     "r"(tile.n_block), "r"(tile.a_row), "r"(valid_rows)
                     : "memory");
        if constexpr (Traits::kIsFp8) {
          asm volatile("st.shared.v2.f32 [%0], {%1, %2};" ::"r"(
                           smem + L::kBScale + ring.stage * Traits::kSmemBScaleBytes),
                       "f"(sb0), "f"(sb1)
                       : "memory");
        }
        const std::uint32_t bar = smem + L::kFull + ring.stage * 8;
        mbarrier_arrive_expect_tx(bar, Traits::kStageTxBytes);
        tma_load_3d(smem + L::kA + ring.stage * Traits::kSmemABytes, &maps.a, bar, kb * BLOCK_K,
                    tile.a_row, a_group);
        const std::uint32_t b_dst = smem + L::kB + ring.stage * Traits::kSmemBBytes;
        if constexpr (Traits::kClusterM > 1) {
          // B in halves: this CTA's half to both CTAs, or (not shared) both halves to this one.
          constexpr int kHalf = Traits::kBRowsPerCta;
          if (tile.multicast) {
            const int rank = static_cast<int>(cluster_cta_rank());
            tma_load_3d_multicast(b_dst + rank * kHalf * 128, &maps.b, bar, kb * BLOCK_K,
                                  n0 + rank * kHalf, tile.expert, 0b11);
          } else {
            tma_load_3d(b_dst, &maps.b, bar, kb * BLOCK_K, n0, tile.expert);
            tma_load_3d(b_dst + kHalf * 128, &maps.b, bar, kb * BLOCK_K, n0 + kHalf, tile.expert);
          }
        } else {
          tma_load_3d(b_dst, &maps.b, bar, kb * BLOCK_K, n0, tile.expert);
        }
        if constexpr (Traits::kIsFp8) {
          tma_load_3d(smem + L::kAScale + ring.stage * Traits::kSmemAScaleBytes, &maps.a_scale, bar,
                      tile.a_row, kb, a_group);
        }
      }
      __syncwarp();
      ring.advance<Traits::kNumStages>();
    }
  }
  mbarrier_wait(smem + L::kEmpty + ring.stage * 8, ring.phase ^ 1);
  if (lane == 0) {
    const std::uint32_t info = smem + L::kInfo + ring.stage * Traits::kSmemInfoBytes;
    asm volatile("st.shared.s32 [%0], %1;" ::"r"(info), "r"(kNoTilesLeft) : "memory");
    mbarrier_arrive_expect_tx(smem + L::kFull + ring.stage * 8, 0);
  }
}

}  // namespace moerun::cuda::sm90
