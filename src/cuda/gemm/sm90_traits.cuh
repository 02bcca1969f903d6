// The grouped GEMM kernel's compile-time shape (GroupedGemmTraits: tile, stages, cluster, register
// split, shared-memory budget, each checked by a static_assert that says what is wrong), its
// shared-memory carve-up, and what travels through the pipeline with each stage (StageInfo, the
// ring position).
#pragma once

#include <cstdint>

#include "cuda/gemm/ptx/sm90_wgmma.cuh"
#include "cuda/gemm/sm90_epilogue.cuh"
#include "cuda/gemm/sm90_variants.h"

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
  static constexpr int kStagesBytes = kNumStages * (kSmemABytes + kSmemBBytes + kSmemAScaleBytes +
                                                    kSmemBScaleBytes + kSmemInfoBytes);
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
// the tile's first and last 128-column blocks (in their own slot, see produce()). `expert`:
// kNoTilesLeft after the last tile, Tile::kDummy for a cluster peer's stages that carry nothing.
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

}  // namespace moerun::cuda::sm90
