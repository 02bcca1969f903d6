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
//  - the last warpgroup, the producer: one thread fills a kNumStages-deep ring of stages (full /
//    empty mbarriers, carried across tiles) with the TMA loads of A and B and, for FP8, the
//    stage's activation scales (TMA, BLOCK_M floats) and weight scales (the one or two 128-column
//    blocks the tile covers, plain loads issued before the stage is free, stored before its
//    arrival).
// With two math warpgroups, setmaxnreg moves registers from the producer (40) to them (232).
//
// The math warps' instruction stream per K block is what sets the pace of FP8 (the tensor core
// finishes a warpgroup's K block in 256 cycles at N 128; the other warpgroup must be ready by
// then): descriptors are warp-uniform (the warpgroup index is broadcast, only their low words
// move) and every scale is in shared memory, so no global load sits on the wgmma issue path.
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
#include <type_traits>
#include <utility>

#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/gemm/ptx/sm90_cluster.cuh"
#include "cuda/gemm/ptx/sm90_mbarrier.cuh"
#include "cuda/gemm/ptx/sm90_tma.cuh"
#include "cuda/gemm/ptx/sm90_warpgroup.cuh"
#include "cuda/gemm/ptx/sm90_wgmma.cuh"
#include "cuda/gemm/sm90_epilogue.cuh"
#include "cuda/gemm/sm90_params.h"
#include "cuda/gemm/sm90_scheduler.cuh"
#include "cuda/gemm/sm90_variants.h"
#include "cuda/per_device.h"

namespace moerun::cuda::sm90 {

// Largest dynamic shared memory of one block on sm_90 (227 KiB).
inline constexpr int kMaxSmemBytes = 232448;

constexpr int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }

template <bool kFp8, int kN>
struct WgmmaFor;
template <>
struct WgmmaFor<false, 128> : WgmmaBf16M64N128K16 {};
template <>
struct WgmmaFor<false, 256> : WgmmaBf16M64N256K16 {};
template <>
struct WgmmaFor<true, 112> : WgmmaE4m3M64N112K32 {};
template <>
struct WgmmaFor<true, 128> : WgmmaE4m3M64N128K32 {};
template <>
struct WgmmaFor<true, 160> : WgmmaE4m3M64N160K32 {};
template <>
struct WgmmaFor<true, 192> : WgmmaE4m3M64N192K32 {};

// FP8 promotion of one K block: acc += part * scale, where the fragment's 8-column chunks j <
// kFormer take the scales of the tile's first 128-column weight block and the rest those of the
// second, for row lo (d[4j], d[4j+1]) and row hi (d[4j+2], d[4j+3]).
template <int kFormer, int kNumAccum>
__device__ __forceinline__ void promote_fp8_split(float (&acc)[kNumAccum],
                                                  const float (&part)[kNumAccum], float s0_lo,
                                                  float s0_hi, float s1_lo, float s1_hi) {
#pragma unroll
  for (int j = 0; j < kNumAccum / 4; ++j) {
    const float s_lo = j < kFormer ? s0_lo : s1_lo, s_hi = j < kFormer ? s0_hi : s1_hi;
    acc[4 * j + 0] = fmaf(part[4 * j + 0], s_lo, acc[4 * j + 0]);
    acc[4 * j + 1] = fmaf(part[4 * j + 1], s_lo, acc[4 * j + 1]);
    acc[4 * j + 2] = fmaf(part[4 * j + 2], s_hi, acc[4 * j + 2]);
    acc[4 * j + 3] = fmaf(part[4 * j + 3], s_hi, acc[4 * j + 3]);
  }
}

// Picks the split for the tile's first column modulo 128 (`n_offset`, a multiple of
// gcd(BLOCK_N, 128)): one compiled promotion per possible offset, chosen by a warp-uniform branch,
// so that no chunk selects its scale at run time (a select per chunk per K block doubled the
// promotion's instructions).
template <int BLOCK_N, int kNumAccum, int... kOffsetIndex>
__device__ __forceinline__ void promote_fp8_dispatch(float (&acc)[kNumAccum],
                                                     const float (&part)[kNumAccum], int n_offset,
                                                     float s0_lo, float s0_hi, float s1_lo,
                                                     float s1_hi,
                                                     std::integer_sequence<int, kOffsetIndex...>) {
  constexpr int kStep = gcd(BLOCK_N, 128);
  // Chunks before the boundary: (128 - offset) / 8, all of the tile's when it ends before it.
  (void)((n_offset == kOffsetIndex * kStep
              ? (promote_fp8_split<std::min((128 - kOffsetIndex * kStep) / 8, BLOCK_N / 8)>(
                     acc, part, s0_lo, s0_hi, s1_lo, s1_hi),
                 true)
              : false) ||
         ...);
}

template <int BLOCK_N, int kNumAccum>
__device__ __forceinline__ void promote_fp8(float (&acc)[kNumAccum],
                                            const float (&part)[kNumAccum], int n_offset,
                                            float s0_lo, float s0_hi, float s1_lo, float s1_hi) {
  if constexpr (128 % BLOCK_N == 0) {  // a tile never straddles a 128-column block
    promote_fp8_split<BLOCK_N / 8>(acc, part, s0_lo, s0_hi, s1_lo, s1_hi);
  } else {
    promote_fp8_dispatch<BLOCK_N>(acc, part, n_offset, s0_lo, s0_hi, s1_lo, s1_hi,
                                  std::make_integer_sequence<int, 128 / gcd(BLOCK_N, 128)>{});
  }
}

template <bool kFp8, int BLOCK_M_, int BLOCK_N_, int kNumStages_, int kClusterM_>
struct GroupedGemmTraits {
  static constexpr bool kIsFp8 = kFp8;
  static constexpr int BLOCK_M = BLOCK_M_;
  static constexpr int BLOCK_N = BLOCK_N_;
  static constexpr int kNumStages = kNumStages_;
  // CTAs per cluster along M: with 2, neighbouring row blocks share the B tile (each CTA loads
  // BLOCK_N / 2 of its rows and multicasts them).
  static constexpr int kClusterM = kClusterM_;
  static constexpr int kBRowsPerCta = BLOCK_N / kClusterM;
  static constexpr int kElemBytes = kFp8 ? 1 : 2;
  // One 128-byte swizzle row of K per stage: 64 bf16 or 128 e4m3 (= the FP8 scale group).
  static constexpr int BLOCK_K = 128 / kElemBytes;
  static constexpr int kNumMathWarpgroups = BLOCK_M / 64;
  static constexpr int kNumMathThreads = 128 * kNumMathWarpgroups;
  static constexpr int kNumThreads = kNumMathThreads + 128;
  using Wgmma = WgmmaFor<kFp8, BLOCK_N>;
  static constexpr int kNumAccum = Wgmma::kNumAccum;
  static constexpr int kKSteps = BLOCK_K / Wgmma::kK;
  static constexpr int kSmemABytes = BLOCK_M * 128;
  static constexpr int kSmemBBytes = BLOCK_N * 128;
  // FP8: the stage's activation scales (one per row).
  static constexpr int kSmemAScaleBytes = kFp8 ? BLOCK_M * 4 : 0;
  // FP8: the stage's two weight scales (of the tile's first and last 128-column blocks).
  static constexpr int kSmemBScaleBytes = kFp8 ? 16 : 0;
  // The stage's StageInfo (its tile).
  static constexpr int kSmemInfoBytes = 16;
  // TMA bytes per stage: A, B and, FP8, the A scales.
  static constexpr int kStageTxBytes = kSmemABytes + kSmemBBytes + kSmemAScaleBytes;
  // Epilogue buffer per math warpgroup: the tile's 64-column atoms, or half of them when the
  // whole tile would cost a pipeline stage (BF16 N 256).
  static constexpr int kAtoms = (BLOCK_N + kAtomCols - 1) / kAtomCols;
  static constexpr int kStagesBytes =
      kNumStages *
      (kSmemABytes + kSmemBBytes + kSmemAScaleBytes + kSmemBScaleBytes + kSmemInfoBytes);
  static constexpr int kBarrierBytes = kNumStages * 2 * 8 + 16;  // + the used-row-block count
  static constexpr bool kFullBuffer =
      kStagesBytes + kNumMathWarpgroups * kAtoms * kAtomBytes + kBarrierBytes <= kMaxSmemBytes;
  static constexpr int kBufferAtoms = kFullBuffer ? kAtoms : (kAtoms + 1) / 2;
  static constexpr int kSmemCBytes = kNumMathWarpgroups * kBufferAtoms * kAtomBytes;
  static constexpr int kSmemBytes = kStagesBytes + kSmemCBytes + kBarrierBytes;
  // setmaxnreg (two math warpgroups only: one math warpgroup has 255 registers anyway): the math
  // warps hold N / 2 (BF16) or N (FP8: promoted sums + partial) accumulators and ~40 more.
  static constexpr int kProducerRegs = 40;
  static constexpr int kMathRegs = 232;

  static_assert(BLOCK_M == 64 || BLOCK_M == 128, "BLOCK_M: one or two m64 math warpgroups");
  static_assert(Wgmma::kN == BLOCK_N, "one wgmma covers the tile's N");
  static_assert(BLOCK_K * kElemBytes == 128, "a stage row is one 128-byte swizzle row");
  static_assert(kSmemABytes % 1024 == 0 && kSmemBBytes % 1024 == 0,
                "tiles stay 1024-byte aligned (128-byte swizzle atoms)");
  // Tiles start at multiples of BLOCK_N, so a tile's first column sits at most
  // 128 - gcd(BLOCK_N, 128) into its 128-column block.
  static_assert(!kFp8 || BLOCK_N <= 128 + gcd(BLOCK_N, 128),
                "FP8: a tile must not cover more than two 128-column weight-scale blocks");
  static_assert(kNumStages >= 2 && kNumStages <= 12, "2..12 pipeline stages");
  static_assert(kClusterM == 1 || (kClusterM == 2 && kBRowsPerCta * 128 % 1024 == 0),
                "clusters of 2 along M, each B half on a swizzle atom");
  static_assert(kSmemBytes <= kMaxSmemBytes, "stages + epilogue exceed 227 KiB of shared memory");
  static_assert(kNumMathWarpgroups == 1 || kProducerRegs + 2 * kMathRegs <= 3 * 168,
                "setmaxnreg: the registers moved must fit the 384-thread budget");
};

template <GemmVariant kVariant>
using TraitsOf = GroupedGemmTraits<variant_shape(kVariant).fp8, variant_shape(kVariant).block_m,
                                   variant_shape(kVariant).block_n, variant_shape(kVariant).stages,
                                   variant_shape(kVariant).cluster_m>;

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

// The ring position shared by the producer and each math warp: stage and the parity of its
// current phase.
struct RingPosition {
  int stage = 0;
  std::uint32_t phase = 0;

  template <int kNumStages>
  __device__ __forceinline__ void advance() {
    if (++stage == kNumStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// What the producer tells the math warps with each stage, beside its operands: the tile it
// belongs to (read at a tile's first stage: the math warps never walk the scheduler themselves,
// which keeps its state and divisions off their registers) and, FP8, the stage's weight scales of
// the tile's first and last 128-column blocks (in their own slot, see produce()). `expert`: kNoTilesLeft after the last tile,
// Tile::kDummy for a cluster peer's stages that carry nothing.
inline constexpr int kNoTilesLeft = -1;  // StageInfo::expert after the last tile

struct alignas(16) StageInfo {
  int expert;
  int n_block;
  int a_row;
  int valid_rows;  // masked: rows of the tile below masked_m; contiguous: BLOCK_M
};

// The shared-memory carve-up: [A stages][B stages][C buffers][A scale stages][B scale stages]
// [stage infos][full barriers][empty barriers][used row blocks], as offsets from the 1024-aligned
// base.
template <class Traits>
struct SmemLayout {
  static constexpr int kA = 0;
  static constexpr int kB = kA + Traits::kNumStages * Traits::kSmemABytes;
  static constexpr int kC = kB + Traits::kNumStages * Traits::kSmemBBytes;
  static constexpr int kAScale = kC + Traits::kSmemCBytes;
  static constexpr int kBScale = kAScale + Traits::kNumStages * Traits::kSmemAScaleBytes;
  static constexpr int kInfo = kBScale + Traits::kNumStages * Traits::kSmemBScaleBytes;
  static constexpr int kFull = kInfo + Traits::kNumStages * Traits::kSmemInfoBytes;
  static constexpr int kEmpty = kFull + Traits::kNumStages * 8;
  static constexpr int kUsedRowBlocks = kEmpty + Traits::kNumStages * 8;
  static_assert(sizeof(StageInfo) == Traits::kSmemInfoBytes, "one StageInfo per stage");
  static_assert(kC % 1024 == 0, "the epilogue's swizzled atoms are 1024-byte aligned");
  static_assert(kAScale % 128 == 0 && Traits::kSmemAScaleBytes % 128 == 0,
                "TMA destinations 128-byte aligned");
  static_assert(kInfo % 16 == 0, "stage infos 16-byte aligned");
  static_assert(kUsedRowBlocks + 4 <= Traits::kSmemBytes, "the carve-up fits the allocation");
};

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
          asm volatile("st.shared.v2.f32 [%0], {%1, %2};" ::"r"(smem + L::kBScale +
                                                                ring.stage *
                                                                    Traits::kSmemBScaleBytes),
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
          tma_load_3d(smem + L::kAScale + ring.stage * Traits::kSmemAScaleBytes, &maps.a_scale,
                      bar, tile.a_row, kb, a_group);
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

// Host side of one kernel variant: a persistent grid (one CTA per SM; with clusters, as many
// clusters as can be resident at once), shared memory raised to what the variant needs (once per
// device: not stream operations, so later launches may be captured in a CUDA graph). A CTA
// without tiles exits at once.
template <class Traits>
void launch_grouped_gemm(const GroupedGemmMaps& maps, const GroupedGemmParams& p, int num_sms,
                         cudaStream_t stream) {
  auto* kernel = &grouped_gemm_kernel<Traits>;
  constexpr int kClusterM = Traits::kClusterM;
  // Once per device (not stream operations, but kept out of graph captures after the first use).
  static PerDevice<int> grid_of_device;
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
  const int grid = grid_of_device.get([&](int) {
    MOERUN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Traits::kSmemBytes));
    int full = num_sms / kClusterM * kClusterM;
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
  config.gridDim = dim3(static_cast<unsigned>(grid));
  MOERUN_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, maps, p));
}

}  // namespace moerun::cuda::sm90
