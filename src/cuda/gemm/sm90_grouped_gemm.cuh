// The Hopper grouped GEMM kernel (sm_90a): out[rows, N] = A[rows, K] * B[expert, N, K]^T in bf16,
// for BF16 operands (fp32 accumulation) and for FP8 e4m3 operands with DeepSeek-V3's block scales
// (A: one fp32 per row per 128 K, [rows, K / 128]; B: one per 128 x 128 block, [E, N / 128,
// K / 128]), in the masked and the contiguous layout (DESIGN.md).
//
// Launch: a persistent grid (one CTA per SM; cluster variants: clusters of kClusterN CTAs on
// neighbouring N blocks that share the A tile by TMA multicast), 128 * (BLOCK_M / 64 + 1) threads,
// dynamic shared memory Traits::kSmemBytes. Warp roles:
//  - warpgroups 0 .. BLOCK_M/64 - 1, the math warpgroups: warpgroup w owns rows [64 w, 64 w + 64)
//    of the tile; per K block it waits for the stage, issues wgmma m64nNk16 (BF16, HGMMA) or
//    m64nNk32 (e4m3, QGMMA) from shared memory into fp32 registers, and frees the stage;
//  - the last warpgroup, the producer: one thread issues the TMA loads of A and B for each stage
//    (kNumStages-deep ring of full/empty mbarriers, carried across tiles).
// With two math warpgroups, setmaxnreg moves registers from the producer (40) to them (232).
//
// FP8 numerics (the oracle's, cpu/gemm.cc): for each 128-wide K block, wgmma into a fresh fp32
// partial (scale-d = 0 on its first k32 step), then acc = fma(partial, a_scale[row] * b_scale,
// acc). BF16: one fp32 accumulator over all of K. Every output element's sequence of operations is
// the same whatever the tile shape or the row's position, so layouts agree bit for bit.
//
// Epilogue: accumulators -> bf16 -> shared memory (128-column slabs, rows padded by 16 bytes: no
// bank conflicts) -> 16-byte coalesced global stores of valid rows and columns < N only. Masked
// overlap: after its stores each math warpgroup adds, with release ordering at device scope, the
// number of 128-column groups of its tile to the counter of its 64-row block.
//
// Assumptions (checked on the host): K-major A and B with 16-byte aligned rows; N % 8 == 0; FP8:
// N % 128 == 0 and K % 128 == 0; masked M_max % 64 == 0; contiguous segments 128-aligned.
// Rows of A that hold no token (masked rows >= masked_m inside a tile's last row block, contiguous
// padding rows) are loaded by TMA with their tile but only ever meet their own outputs, which are
// never stored; their scales are not read.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/gemm/ptx/sm90_cluster.cuh"
#include "cuda/gemm/ptx/sm90_mbarrier.cuh"
#include "cuda/gemm/ptx/sm90_tma.cuh"
#include "cuda/gemm/ptx/sm90_warpgroup.cuh"
#include "cuda/gemm/ptx/sm90_wgmma.cuh"
#include "cuda/gemm/sm90_params.h"
#include "cuda/gemm/sm90_scheduler.cuh"
#include "cuda/gemm/sm90_variants.h"
#include "cuda/per_device.h"

namespace moerun::cuda::sm90 {

// Largest dynamic shared memory of one block on sm_90 (227 KiB).
inline constexpr int kMaxSmemBytes = 232448;

template <bool kFp8, int BLOCK_M_, int BLOCK_N_, int kNumStages_, int kClusterN_>
struct GroupedGemmTraits {
  static constexpr bool kIsFp8 = kFp8;
  static constexpr int BLOCK_M = BLOCK_M_;
  static constexpr int BLOCK_N = BLOCK_N_;
  static constexpr int kNumStages = kNumStages_;
  static constexpr int kClusterN = kClusterN_;
  static constexpr int kElemBytes = kFp8 ? 1 : 2;
  // One 128-byte swizzle row of K per stage: 64 bf16 or 128 e4m3 (= the FP8 scale group).
  static constexpr int BLOCK_K = 128 / kElemBytes;
  static constexpr int kNumMathWarpgroups = BLOCK_M / 64;
  static constexpr int kNumMathThreads = 128 * kNumMathWarpgroups;
  static constexpr int kNumThreads = kNumMathThreads + 128;
  using Wgmma = std::conditional_t<
      kFp8, WgmmaE4m3M64N128K32,
      std::conditional_t<BLOCK_N == 256, WgmmaBf16M64N256K16, WgmmaBf16M64N128K16>>;
  static constexpr int kNumAccum = Wgmma::kNumAccum;
  static constexpr int kKSteps = BLOCK_K / Wgmma::kK;
  static constexpr int kEpilogueN = 128;                  // columns per epilogue slab
  static constexpr int kCRowBytes = kEpilogueN * 2 + 16;  // bf16 row + 16 bytes of padding
  static constexpr int kSmemABytes = BLOCK_M * 128;
  // Rows of A each CTA of a cluster loads (and multicasts to all of them).
  static constexpr int kARowsPerCta = BLOCK_M / kClusterN;
  static constexpr int kSmemBBytes = BLOCK_N * 128;
  static constexpr int kStageBytes = kSmemABytes + kSmemBBytes;
  static constexpr int kSmemCBytes = BLOCK_M * kCRowBytes;
  static constexpr int kSmemBytes =
      kNumStages * kStageBytes + kSmemCBytes + kNumStages * 2 * 8 + BLOCK_M * 4 + 16;
  // setmaxnreg (two math warpgroups only: one math warpgroup has 255 registers anyway).
  static constexpr int kProducerRegs = 40;
  static constexpr int kMathRegs = 232;

  static_assert(BLOCK_M == 64 || BLOCK_M == 128, "BLOCK_M: one or two m64 math warpgroups");
  static_assert(Wgmma::kN == BLOCK_N, "one wgmma covers the tile's N");
  static_assert(BLOCK_N % kEpilogueN == 0, "the epilogue works in 128-column slabs");
  static_assert(!kFp8 || BLOCK_N == 128, "FP8: one weight scale (128 columns) per tile");
  static_assert(BLOCK_K * kElemBytes == 128, "a stage row is one 128-byte swizzle row");
  static_assert(kSmemABytes % 1024 == 0 && kSmemBBytes % 1024 == 0,
                "tiles stay 1024-byte aligned (128-byte swizzle atoms)");
  static_assert(BLOCK_K == (kFp8 ? 128 : 64), "BLOCK_K as in the variant table");
  static_assert(kClusterN == 1 || (kClusterN == 2 && BLOCK_M == 128),
                "clusters of 2 along N, 128-row tiles (each CTA multicasts 64 rows of A)");
  static_assert(kARowsPerCta * 128 % 1024 == 0, "each A part starts on a swizzle atom");
  static_assert(kNumStages >= 2 && kNumStages <= 12, "2..12 pipeline stages");
  static_assert(kSmemBytes <= kMaxSmemBytes, "stages + epilogue exceed 227 KiB of shared memory");
  static_assert(kNumMathWarpgroups == 1 || kProducerRegs + 2 * kMathRegs <= 3 * 168,
                "setmaxnreg: the registers moved must fit the 384-thread budget");
};

template <GemmVariant kVariant>
using TraitsOf = GroupedGemmTraits<variant_shape(kVariant).fp8, variant_shape(kVariant).block_m,
                                   variant_shape(kVariant).block_n, variant_shape(kVariant).stages,
                                   variant_shape(kVariant).cluster_n>;

// red.release.gpu: publishes this thread's earlier stores, and those ordered before it by a
// barrier, to a consumer's acquire load at device scope.
__device__ __forceinline__ void release_add(int* counter, int value) {
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;" ::"l"(counter), "r"(value) : "memory");
}

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
    grouped_gemm_kernel(const __grid_constant__ CUtensorMap tma_a,
                        const __grid_constant__ CUtensorMap tma_b,
                        const __grid_constant__ GroupedGemmParams p) {
  constexpr int BLOCK_M = Traits::BLOCK_M, BLOCK_N = Traits::BLOCK_N, BLOCK_K = Traits::BLOCK_K;
  constexpr int kNumStages = Traits::kNumStages, kNumAccum = Traits::kNumAccum;
  constexpr bool kFp8 = Traits::kIsFp8;
  constexpr int kClusterN = Traits::kClusterN;
  using Wgmma = typename Traits::Wgmma;

  // Shared memory: [A stages][B stages][C slab][full barriers][empty barriers][row flags][count].
  // NOTE: no static shared memory, so the dynamic buffer starts at the (1024-aligned) window base.
  extern __shared__ __align__(1024) std::uint8_t smem[];
  std::uint8_t* smem_a = smem;
  std::uint8_t* smem_b = smem_a + kNumStages * Traits::kSmemABytes;
  std::uint8_t* smem_c = smem_b + kNumStages * Traits::kSmemBBytes;
  auto* full = reinterpret_cast<std::uint64_t*>(smem_c + Traits::kSmemCBytes);
  std::uint64_t* empty = full + kNumStages;
  int* row_ok = reinterpret_cast<int*>(empty + kNumStages);
  int& used_row_blocks = row_ok[BLOCK_M];

  const int thread = static_cast<int>(threadIdx.x);
  const int warpgroup = thread / 128;
  if (thread == Traits::kNumMathThreads) {
    if (smem_addr(smem) % 1024 != 0) __trap();  // the swizzle atoms need it
    tma_prefetch_descriptor(&tma_a);
    tma_prefetch_descriptor(&tma_b);
    for (int s = 0; s < kNumStages; ++s) {
      mbarrier_init(&full[s], 1);  // the producer's arrive.expect_tx (+ the TMA bytes)
      // One arrival per math warp of every CTA in the cluster (all of them read each A part).
      mbarrier_init(&empty[s], Traits::kNumMathThreads / 32 * kClusterN);
    }
    mbarrier_init_fence();
  }
  if (thread == 0) used_row_blocks = 0;
  __syncthreads();
  if (p.masked_m == nullptr) {
    find_used_row_blocks<BLOCK_M>(p, &used_row_blocks);
    __syncthreads();
  }
  // Peers' barriers are initialized before anyone multicasts into them or arrives on them.
  if constexpr (kClusterN > 1) cluster_sync();
  Scheduler<BLOCK_M, kClusterN> scheduler(used_row_blocks);
  Tile tile;
  const int cta_rank = static_cast<int>(blockIdx.x) % kClusterN;

  if (warpgroup == Traits::kNumMathWarpgroups) {
    // ---- Producer: one thread walks the tiles and fills the stages. ----
    if constexpr (Traits::kNumMathWarpgroups > 1) warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (thread == Traits::kNumMathThreads) {
      int stage = 0;
      std::uint32_t phase = 0;
      while (scheduler.next(p, tile)) {
        const int n0 = tile.n_block * BLOCK_N;
        for (int kb = 0; kb < p.k_blocks; ++kb) {
          mbarrier_wait(&empty[stage], phase ^ 1);
          // Both A parts (this CTA's and the peers' multicasts) and B land on this barrier.
          mbarrier_arrive_expect_tx(&full[stage], Traits::kStageBytes);
          std::uint8_t* a_dst = smem_a + stage * Traits::kSmemABytes;
          if constexpr (kClusterN > 1) {
            tma_load_3d_multicast(a_dst + cta_rank * Traits::kARowsPerCta * 128, &tma_a,
                                  &full[stage], kb * BLOCK_K,
                                  tile.a_row + cta_rank * Traits::kARowsPerCta, tile.a_group,
                                  static_cast<std::uint16_t>((1u << kClusterN) - 1));
          } else {
            tma_load_3d(a_dst, &tma_a, &full[stage], kb * BLOCK_K, tile.a_row, tile.a_group);
          }
          tma_load_3d(smem_b + stage * Traits::kSmemBBytes, &tma_b, &full[stage], kb * BLOCK_K, n0,
                      tile.expert);
          if (++stage == kNumStages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    // ---- Math warpgroups. ----
    if constexpr (Traits::kNumMathWarpgroups > 1) warpgroup_reg_alloc<Traits::kMathRegs>();
    const int t = thread % 128, warp = t / 32, lane = t % 32;
    // This thread's two accumulator rows (tile-local) and the warpgroup's first row.
    const int wg_row0 = warpgroup * 64;
    const int row_lo = wg_row0 + warp * 16 + lane / 4, row_hi = row_lo + 8;
    const int barrier_id = 1 + warpgroup;

    float acc[kNumAccum];
    // FP8: partial sums of the K block in flight and of the one being promoted.
    float part0[kFp8 ? kNumAccum : 1], part1[kFp8 ? kNumAccum : 1];
    int stage = 0;
    std::uint32_t phase = 0;
    const std::uint32_t a_base = smem_addr(smem_a) + wg_row0 * 128;
    const std::uint32_t b_base = smem_addr(smem_b);

    while (scheduler.next(p, tile)) {
      // Which rows hold a token: masked by count, contiguous by m_indices (padding is -1).
      bool ok_lo, ok_hi, wg_active;
      int my_flag_row = wg_row0 + t;  // threads 0..63 publish the flags of the warpgroup's rows
      int my_flag = 0;
      if (p.masked_m != nullptr) {
        ok_lo = row_lo < tile.valid_rows;
        ok_hi = row_hi < tile.valid_rows;
        wg_active = wg_row0 < tile.valid_rows;
        my_flag = my_flag_row < tile.valid_rows;
      } else {
        const int* rows = p.m_indices + tile.row0;
        ok_lo = __ldg(rows + row_lo) == tile.expert;
        ok_hi = __ldg(rows + row_hi) == tile.expert;
        wg_active = __ldg(rows + wg_row0) == tile.expert;
        if (t < 64) my_flag = __ldg(rows + my_flag_row) == tile.expert;
      }
      if (t < 64) row_ok[my_flag_row] = my_flag;

      // Issues the wgmmas of the current stage into `dst` (accumulating after the first k-step of
      // the stage when `accumulate_first`) and moves to the next stage.
      auto issue = [&](auto& dst, bool accumulate_first) {
        mbarrier_wait(&full[stage], phase);
        const std::uint32_t a_addr = a_base + stage * Traits::kSmemABytes;
        const std::uint32_t b_addr = b_base + stage * Traits::kSmemBBytes;
        fence_operands(dst);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < Traits::kKSteps; ++ks) {
          // k16 (bf16) / k32 (e4m3) = 32 bytes further along the 128-byte row.
          Wgmma::mma(make_sw128_desc(a_addr + ks * 32), make_sw128_desc(b_addr + ks * 32), dst,
                     ks > 0 || accumulate_first);
        }
        wgmma_commit();
        fence_operands(dst);
        if (++stage == kNumStages) {
          stage = 0;
          phase ^= 1;
        }
      };
      // The stage's operands are consumed (its wgmmas completed): hand it back to the producer(s)
      // (with a cluster, every CTA's producer writes an A part into this CTA's stage).
      auto release = [&](int done_stage) {
        if (lane == 0) {
          if constexpr (kClusterN > 1) {
#pragma unroll
            for (int r = 0; r < kClusterN; ++r) mbarrier_arrive_cluster(&empty[done_stage], r);
          } else {
            mbarrier_arrive(&empty[done_stage]);
          }
        }
      };

      if constexpr (kFp8) {
        // Two partial buffers: K block kb's wgmmas run while kb - 1's partial sums are promoted.
        // Promotion, as the oracle: acc += partial * (act_scale * weight_scale), K block by K
        // block. Offsets, not pointers, to spare registers (the bases stay in the constant bank).
        const long long a_scale_lo = (tile.row0 + row_lo) * p.k_blocks;
        const int b_scale_at =
            (tile.expert * (p.n / 128) + tile.n_block) * p.k_blocks;  // < E * N/128 * K/128
        // Row scales of invalid rows are never read (0 keeps their garbage in their own outputs).
        auto scales = [&](int kb, float& s_lo, float& s_hi) {
          const float sb = tile.n_valid ? __ldg(p.b_scale + b_scale_at + kb) : 0.0f;
          const float* a = p.a_scale + a_scale_lo + kb;
          s_lo = __fmul_rn(ok_lo ? __ldg(a) : 0.0f, sb);
          s_hi = __fmul_rn(ok_hi ? __ldg(a + 8 * p.k_blocks) : 0.0f, sb);
        };
        auto promote = [&](auto& src, float s_lo, float s_hi) {
          fence_operands(src);
#pragma unroll
          for (int j = 0; j < kNumAccum / 4; ++j) {
            acc[4 * j + 0] = fmaf(src[4 * j + 0], s_lo, acc[4 * j + 0]);
            acc[4 * j + 1] = fmaf(src[4 * j + 1], s_lo, acc[4 * j + 1]);
            acc[4 * j + 2] = fmaf(src[4 * j + 2], s_hi, acc[4 * j + 2]);
            acc[4 * j + 3] = fmaf(src[4 * j + 3], s_hi, acc[4 * j + 3]);
          }
        };
#pragma unroll
        for (int i = 0; i < kNumAccum; ++i) acc[i] = 0.0f;
        float s0_lo, s0_hi, s1_lo, s1_hi;
        // One group in flight at the loop head (part0, K block kb - 1), so every wait is static.
        int prev_stage = stage;
        issue(part0, false);
        scales(0, s0_lo, s0_hi);
        int kb = 1;
        for (; kb + 1 < p.k_blocks; kb += 2) {
          int this_stage = stage;
          issue(part1, false);
          scales(kb, s1_lo, s1_hi);
          wgmma_wait<1>();  // K block kb - 1 (part0) is done
          release(prev_stage);
          promote(part0, s0_lo, s0_hi);
          prev_stage = this_stage;
          this_stage = stage;
          issue(part0, false);
          scales(kb + 1, s0_lo, s0_hi);
          wgmma_wait<1>();  // K block kb (part1) is done
          release(prev_stage);
          promote(part1, s1_lo, s1_hi);
          prev_stage = this_stage;
        }
        if (kb < p.k_blocks) {  // an even number of K blocks: one more, into part1
          const int this_stage = stage;
          issue(part1, false);
          scales(kb, s1_lo, s1_hi);
          wgmma_wait<1>();
          release(prev_stage);
          promote(part0, s0_lo, s0_hi);
          wgmma_wait<0>();
          release(this_stage);
          promote(part1, s1_lo, s1_hi);
        } else {
          wgmma_wait<0>();
          release(prev_stage);
          promote(part0, s0_lo, s0_hi);
        }
      } else {
        // Keep one wgmma group in flight; the previous K block's stage is then free.
        int prev_stage = stage;
        issue(acc, false);
        for (int kb = 1; kb < p.k_blocks; ++kb) {
          const int this_stage = stage;
          issue(acc, true);
          wgmma_wait<1>();
          fence_operands(acc);
          release(prev_stage);
          prev_stage = this_stage;
        }
        wgmma_wait<0>();
        fence_operands(acc);
        release(prev_stage);
      }
      // No row of this warpgroup holds a token, or the tile is a cluster's N block past N: nothing
      // to store.
      if (!wg_active || !tile.n_valid) continue;

      // ---- Epilogue, one 128-column slab at a time. ----
      const int n0 = tile.n_block * BLOCK_N;
      constexpr int kJPerSlab = Traits::kEpilogueN / 8;
#pragma unroll
      for (int slab = 0; slab < BLOCK_N / Traits::kEpilogueN; ++slab) {
#pragma unroll
        for (int jj = 0; jj < kJPerSlab; ++jj) {
          const int j = slab * kJPerSlab + jj;
          const int col_bytes = (jj * 8 + 2 * (lane % 4)) * 2;
          const std::uint32_t lo = pack_bf16x2(acc[4 * j + 0], acc[4 * j + 1]);
          const std::uint32_t hi = pack_bf16x2(acc[4 * j + 2], acc[4 * j + 3]);
          *reinterpret_cast<std::uint32_t*>(smem_c + row_lo * Traits::kCRowBytes + col_bytes) = lo;
          *reinterpret_cast<std::uint32_t*>(smem_c + row_hi * Traits::kCRowBytes + col_bytes) = hi;
        }
        named_barrier_sync(barrier_id, 128);
        // 16 threads per 256-byte row, 8 rows per pass, 8 passes over the warpgroup's 64 rows.
        const int chunk = t % 16;
        const int col = n0 + slab * Traits::kEpilogueN + chunk * 8;
#pragma unroll
        for (int pass = 0; pass < 8; ++pass) {
          const int row = wg_row0 + pass * 8 + t / 16;
          if (row_ok[row] && col < p.n) {
            const uint4 v =
                *reinterpret_cast<const uint4*>(smem_c + row * Traits::kCRowBytes + chunk * 16);
            *reinterpret_cast<uint4*>(p.out + (tile.row0 + row) * p.n + col) = v;
          }
        }
        named_barrier_sync(barrier_id, 128);  // the slab buffer and flags are free again
      }
      if (p.counters != nullptr && t == 0) {
        // One count per 128-column group of this tile (the report's threshold is ceil(N / 128)).
        const int groups = (min(p.n - n0, BLOCK_N) + 127) / 128;
        release_add(p.counters + tile.expert * p.counter_blocks + (tile.a_row + wg_row0) / 64,
                    groups);
      }
    }
  }
  // No CTA leaves while a peer may still arrive on its barriers (all threads, producers included).
  if constexpr (kClusterN > 1) {
    __syncwarp();  // the elected producer lane rejoins its warp (the barrier is .aligned)
    cluster_sync();
  }
}

// Host side of one kernel variant: a persistent grid (one CTA per SM; with clusters, as many
// clusters as can be resident at once), shared memory raised to what the variant needs. A CTA
// without tiles exits at once.
template <class Traits>
void launch_grouped_gemm(const CUtensorMap& tma_a, const CUtensorMap& tma_b,
                         const GroupedGemmParams& p, int num_sms, cudaStream_t stream) {
  auto* kernel = &grouped_gemm_kernel<Traits>;
  constexpr int kClusterN = Traits::kClusterN;
  // Once per device (not stream operations, but kept out of graph captures after the first use).
  static PerDevice<int> grid_of_device;
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kClusterN;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  config.blockDim = dim3(Traits::kNumThreads);
  config.dynamicSmemBytes = Traits::kSmemBytes;
  config.stream = stream;
  config.attrs = &cluster;
  config.numAttrs = kClusterN > 1 ? 1 : 0;
  const int grid = grid_of_device.get([&](int) {
    MOERUN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Traits::kSmemBytes));
    int full = num_sms / kClusterN * kClusterN;
    if constexpr (kClusterN > 1) {
      // NOTE: clusters are placed within a GPC, so fewer than SMs / 2 may fit at once; a
      // persistent grid larger than that would run its last clusters in a second wave.
      config.gridDim = dim3(static_cast<unsigned>(full));
      int clusters = 0;
      MOERUN_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
      if (clusters > 0) full = std::min(full, clusters * kClusterN);
    }
    return full;
  });
  config.gridDim = dim3(static_cast<unsigned>(grid));
  MOERUN_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, tma_a, tma_b, p));
}

}  // namespace moerun::cuda::sm90
