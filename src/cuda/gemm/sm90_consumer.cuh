// The grouped GEMM's math warpgroups (sm90_grouped_gemm.cuh has the kernel's overview).
#pragma once

#include <cstdint>

#include "cuda/gemm/ptx/sm90_cluster.cuh"
#include "cuda/gemm/ptx/sm90_mbarrier.cuh"
#include "cuda/gemm/ptx/sm90_warpgroup.cuh"
#include "cuda/gemm/sm90_epilogue.cuh"
#include "cuda/gemm/sm90_fp8_promotion.cuh"
#include "cuda/gemm/sm90_params.h"
#include "cuda/gemm/sm90_scheduler.cuh"
#include "cuda/gemm/sm90_traits.cuh"

namespace moerun::cuda::sm90 {

// The math warpgroups: per tile, the main loop over the stages the producer fills, then the
// epilogue.
template <class Traits>
__device__ __forceinline__ void consume(const GroupedGemmMaps& maps, const GroupedGemmParams& p,
                                        std::uint8_t* smem) {
  constexpr int BLOCK_M = Traits::BLOCK_M, BLOCK_N = Traits::BLOCK_N;
  constexpr int kNumStages = Traits::kNumStages, kNumAccum = Traits::kNumAccum;
  constexpr bool kFp8 = Traits::kIsFp8;
  using Wgmma = typename Traits::Wgmma;
  using L = SmemLayout<Traits>;
  std::uint8_t* smem_a = smem + L::kA;
  std::uint8_t* smem_b = smem + L::kB;
  std::uint8_t* smem_c = smem + L::kC;
  auto* smem_a_scale = reinterpret_cast<const float*>(smem + L::kAScale);
  auto* smem_b_scale = reinterpret_cast<const float*>(smem + L::kBScale);
  auto* stage_info = reinterpret_cast<const StageInfo*>(smem + L::kInfo);
  auto* full = reinterpret_cast<std::uint64_t*>(smem + L::kFull);
  auto* empty = reinterpret_cast<std::uint64_t*>(smem + L::kEmpty);
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  const int thread = static_cast<int>(threadIdx.x);

  if constexpr (Traits::kNumMathWarpgroups > 1) warpgroup_reg_alloc<Traits::kMathRegs>();
  const int t = thread % 128, warp = t / 32, lane = t % 32;
  // This thread's two accumulator rows (tile-local) and the warpgroup's first row.
  const int wg_row0 = warpgroup * 64;
  const int row_lo = wg_row0 + warp * 16 + lane / 4, row_hi = row_lo + 8;
  const int barrier_id = 1 + warpgroup;
  std::uint8_t* c_buffer = smem_c + warpgroup * Traits::kBufferAtoms * kAtomBytes;
  // Descriptor low words of stage 0; a stage is kSmem{A,B}Bytes / 16 further, a k-step 2.
  const std::uint32_t a_desc0 = sw128_desc_lo(smem_addr(smem_a) + wg_row0 * 128);
  const std::uint32_t b_desc0 = sw128_desc_lo(smem_addr(smem_b));

  float acc[kNumAccum];
  // FP8: the K block's partial sums (wgmma's accumulator), promoted into acc.
  float part[kFp8 ? kNumAccum : 1];
  RingPosition ring;
  Tile tile;

  // Issues the wgmmas of the ring's current stage into `dst`, the first k-step accumulating only
  // when `accumulate_first`.
  auto issue = [&](auto& dst, bool accumulate_first) {
    const std::uint32_t a_lo = a_desc0 + ring.stage * (Traits::kSmemABytes / 16);
    const std::uint32_t b_lo = b_desc0 + ring.stage * (Traits::kSmemBBytes / 16);
    fence_operands(dst);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < Traits::kKSteps; ++ks) {
      // k16 (bf16) / k32 (e4m3) = 32 bytes further along the 128-byte row.
      Wgmma::mma(sw128_desc(a_lo + ks * 2), sw128_desc(b_lo + ks * 2), dst,
                 ks > 0 || accumulate_first);
    }
    wgmma_commit();
    fence_operands(dst);
  };
  // The stage's operands are consumed (its wgmmas completed) and so are its infos and scales:
  // hand it back to the producer(s). Every lane arrives (one instruction per warp): each lane's own
  // reads of the stage are then ordered before the producer's next write to it.
  auto release = [&](int done_stage) {
    if constexpr (Traits::kClusterM > 1) {
#pragma unroll
      for (int r = 0; r < Traits::kClusterM; ++r) {
        mbarrier_arrive_cluster(smem_addr(&empty[done_stage]), static_cast<std::uint32_t>(r));
      }
    } else {
      mbarrier_arrive(&empty[done_stage]);
    }
  };

  for (;;) {
    // The tile of the next stage (the producer's StageInfo); waiting again on this stage below
    // returns at once.
    mbarrier_wait(&full[ring.stage], ring.phase);
    const StageInfo& info = stage_info[ring.stage];
    if (info.expert == kNoTilesLeft) break;
    if (info.expert == Tile::kDummy) {  // the peer's tile: its stages carry nothing here
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        mbarrier_wait(&full[ring.stage], ring.phase);
        release(ring.stage);
        ring.advance<kNumStages>();
      }
      continue;
    }
    tile.expert = info.expert;
    tile.n_block = info.n_block;
    tile.a_row = info.a_row;
    const int valid_rows = info.valid_rows;
    if constexpr (kFp8) {
      // The tile's 8-column chunks before the first 128-column boundary take weight scale 0, the
      // rest scale 1: which chunk that is depends on the tile's first column modulo 128.
      const int n_offset = (tile.n_block * BLOCK_N) % 128;
#pragma unroll
      for (int i = 0; i < kNumAccum; ++i) acc[i] = 0.0f;
      for (int kb = 0; kb < p.k_blocks; ++kb) {
        mbarrier_wait(&full[ring.stage], ring.phase);
        const float* a_scale = smem_a_scale + ring.stage * BLOCK_M;
        const float sa_lo = a_scale[row_lo], sa_hi = a_scale[row_hi];
        const float* b_scale = smem_b_scale + ring.stage * (Traits::kSmemBScaleBytes / 4);
        const float sb0 = b_scale[0], sb1 = b_scale[1];
        issue(part, false);
        wgmma_wait<0>();
        fence_operands(part);
        release(ring.stage);
        ring.advance<kNumStages>();
        // Promotion, as the oracle: acc += partial * (act_scale * weight_scale).
        promote_fp8<BLOCK_N>(acc, part, n_offset, __fmul_rn(sa_lo, sb0), __fmul_rn(sa_hi, sb0),
                             __fmul_rn(sa_lo, sb1), __fmul_rn(sa_hi, sb1));
      }
    } else {
      // Keep one wgmma group in flight; the previous K block's stage is then free.
      int prev_stage = ring.stage;
      issue(acc, false);
      ring.advance<kNumStages>();
      for (int kb = 1; kb < p.k_blocks; ++kb) {
        mbarrier_wait(&full[ring.stage], ring.phase);
        const int this_stage = ring.stage;
        issue(acc, true);
        ring.advance<kNumStages>();
        wgmma_wait<1>();
        fence_operands(acc);
        release(prev_stage);
        prev_stage = this_stage;
      }
      wgmma_wait<0>();
      fence_operands(acc);
      release(prev_stage);
    }

    // ---- Epilogue (sm90_epilogue.cuh). ----
    WarpgroupRows rows;
    rows.row0 = tile.row0(p) + wg_row0;
    rows.tma_row = tile.a_row + wg_row0;
    rows.tma_group = tile.a_group(p);
    if (p.masked_m != nullptr) {
      rows.valid = valid_rows - wg_row0;
      rows.all_valid = rows.valid >= 64;
      if (rows.valid <= 0) continue;  // no row of this warpgroup holds a token
    } else {
      rows.valid = -1;
      // Valid rows are a prefix: the first and the last decide.
      if (__ldg(p.m_indices + rows.row0) != tile.expert) continue;
      rows.all_valid = __ldg(p.m_indices + rows.row0 + 63) == tile.expert;
    }
    store_warpgroup_tile<BLOCK_N, Traits::kBufferAtoms>(p, &maps.out, tile, rows, acc, c_buffer,
                                                        barrier_id);
  }
  // The copy engine must be done reading the epilogue buffer before the CTA's shared memory goes.
  if (t == 0) tma_store_wait_all();
}

}  // namespace moerun::cuda::sm90
