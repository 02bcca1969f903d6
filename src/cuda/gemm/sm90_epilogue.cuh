// The grouped GEMM's epilogue, per math warpgroup: its 64 rows x BLOCK_N columns of a tile, fp32
// accumulators -> bf16 -> global memory.
//
// The tile goes through shared memory in atoms of 64 rows x 64 columns (8 KiB, the 128-byte
// swizzle of the TMA maps: 16-byte chunk c of row r at r * 128 + (c ^ r % 8) * 16), written with
// stmatrix (conflict-free: the 8 rows of each 8 x 8 matrix fall in 8 different chunks). Then:
//  - every row of the warpgroup holds a token: one thread stores each whole 64-column atom by TMA
//    (the copy engine clips columns past N) and does not wait: the next write of the buffer (next
//    round or next tile) first waits until the copy engine has read it;
//  - otherwise (masked rows >= masked_m, contiguous padding rows), and for a last atom narrower
//    than 64 columns: 16-byte stores of the rows that hold a token, columns < N only.
// Rows that hold no token are never written (DESIGN.md: padding rows are never computed into the
// output; masked rows past masked_m are never touched).
//
// A buffer of kBufferAtoms atoms per warpgroup takes the tile in ceil(atoms / kBufferAtoms) rounds
// (BF16 128 x 256 tiles use half a tile's worth so that four pipeline stages fit).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "cuda/device_utils.cuh"
#include "cuda/gemm/ptx/sm90_tma.cuh"
#include "cuda/gemm/ptx/sm90_warpgroup.cuh"
#include "cuda/gemm/sm90_params.h"
#include "cuda/gemm/sm90_scheduler.cuh"

namespace moerun::cuda::sm90 {

inline constexpr int kAtomCols = 64;
inline constexpr int kAtomRows = 64;
inline constexpr int kAtomBytes = kAtomRows * kAtomCols * 2;

// red.release.gpu: publishes this thread's earlier stores, and those ordered before it by a
// barrier, to a consumer's acquire load at device scope.
__device__ __forceinline__ void release_add(int* counter, int value) {
  asm volatile("red.release.gpu.global.add.s32 [%0], %1;" ::"l"(counter), "r"(value) : "memory");
}

// Which of a warpgroup's 64 rows hold a token. Valid rows are a prefix of the tile in both layouts
// (masked: below masked_m; contiguous: an expert's rows come first in its 128-aligned segment).
struct WarpgroupRows {
  long long row0;  // first row of the warpgroup in out (flattened)
  int tma_row;     // ... as the out map's row coordinate inside its group
  int tma_group;   // the out map's group coordinate
  int valid;       // masked: rows below masked_m (may be <= 0); contiguous: unused (-1)
  bool all_valid;  // all 64 rows hold a token

  __device__ bool row_ok(const GroupedGemmParams& p, const Tile& tile, int r) const {
    if (p.masked_m != nullptr) return r < valid;
    return __ldg(p.m_indices + row0 + r) == tile.expert;
  }
};

template <int BLOCK_N, int kBufferAtoms, int kNumAccum>
__device__ __forceinline__ void store_warpgroup_tile(const GroupedGemmParams& p,
                                                     const CUtensorMap* out_map, const Tile& tile,
                                                     const WarpgroupRows& rows,
                                                     const float (&acc)[kNumAccum],
                                                     std::uint8_t* buffer, int barrier_id) {
  static_assert(BLOCK_N % 16 == 0, "stmatrix x4 covers 16 columns");
  static_assert(kNumAccum == BLOCK_N / 2, "m64nN fragments: N / 2 accumulators per thread");
  constexpr int kAtoms = (BLOCK_N + kAtomCols - 1) / kAtomCols;
  constexpr int kRounds = (kAtoms + kBufferAtoms - 1) / kBufferAtoms;
  const int t = static_cast<int>(threadIdx.x) % 128, warp = t / 32, lane = t % 32;
  const int n0 = tile.n_block * BLOCK_N;
  const std::uint32_t buffer_addr = smem_addr(buffer);
  // stmatrix: lane l addresses row l % 8 of matrix l / 8: matrices (chunk, rows 0-7), (chunk,
  // rows 8-15), (chunk + 1, rows 0-7), (chunk + 1, rows 8-15) of this warp's 16 rows.
  // Chunk (2 pair + lane / 16) of row st_row sits at chunk index (2 pair) ^ st_xor (the two
  // terms of the sum share no bits): two live values, not one address per pair, across the tile.
  const int st_row = warp * 16 + (lane / 8 % 2) * 8 + lane % 8;
  std::uint32_t st_row_addr = buffer_addr + st_row * 128;
  int st_xor = (lane / 16) ^ (st_row % 8);
  // NOTE: opaque to the optimizer, so that the per-pair addresses are formed here and not hoisted
  // out of the tile loop, where holding them spilled the N 192 tile (232 registers).
  asm volatile("" : "+r"(st_row_addr), "+r"(st_xor));

#pragma unroll
  for (int round = 0; round < kRounds; ++round) {
    // The buffer is free: the copy engine has read the last TMA store from it, and every thread
    // is past its 16-byte copies out of it (the barrier).
    if (t == 0) tma_store_wait_read<0>();
    named_barrier_sync(barrier_id, 128);
#pragma unroll
    for (int ba = 0; ba < kBufferAtoms; ++ba) {
      const int atom = round * kBufferAtoms + ba;
      if (atom >= kAtoms) break;
#pragma unroll
      for (int pair = 0; pair < 4; ++pair) {
        const int j = atom * 8 + pair * 2;  // first 8-column chunk of the pair in the tile
        if (j >= BLOCK_N / 8) break;
        const std::uint32_t addr = st_row_addr + ba * kAtomBytes + ((pair * 2) ^ st_xor) * 16;
        stmatrix_x4(addr, pack_bf16x2(acc[4 * j + 0], acc[4 * j + 1]),
                    pack_bf16x2(acc[4 * j + 2], acc[4 * j + 3]),
                    pack_bf16x2(acc[4 * j + 4], acc[4 * j + 5]),
                    pack_bf16x2(acc[4 * j + 6], acc[4 * j + 7]));
      }
    }
    fence_proxy_async_shared();
    named_barrier_sync(barrier_id, 128);
#pragma unroll
    for (int ba = 0; ba < kBufferAtoms; ++ba) {
      const int atom = round * kBufferAtoms + ba;
      if (atom >= kAtoms) break;
      constexpr int kLastCols = BLOCK_N - (kAtoms - 1) * kAtomCols;
      const int cols = atom == kAtoms - 1 ? kLastCols : kAtomCols;
      const int col0 = n0 + atom * kAtomCols;
      const std::uint8_t* src = buffer + ba * kAtomBytes;
      if (rows.all_valid && cols == kAtomCols) {
        if (t == 0 && col0 < p.n) tma_store_3d(src, out_map, col0, rows.tma_row, rows.tma_group);
        continue;
      }
      // 16-byte chunks of the rows that hold a token, columns < N. (`first` is opaque for the
      // reason given above: this rare path must not hold registers across the main loop.)
      const int chunks = cols / 8;
      int first = t;
      asm volatile("" : "+r"(first));
      for (int i = first; i < kAtomRows * chunks; i += 128) {
        const int r = i / chunks, c = i % chunks;
        const int col = col0 + c * 8;
        if (col >= p.n || !rows.row_ok(p, tile, r)) continue;
        const uint4 v = *reinterpret_cast<const uint4*>(src + r * 128 + ((c ^ (r % 8)) * 16));
        *reinterpret_cast<uint4*>(p.out + (rows.row0 + r) * p.n + col) = v;
      }
    }
    if (t == 0) tma_store_commit();
  }
  if (p.counters != nullptr) {
    // Overlap: the tile's outputs must be written before the count that says so (the TMA stores
    // by thread 0's wait, the others' 16-byte stores by the barrier).
    if (t == 0) tma_store_wait_all();
    named_barrier_sync(barrier_id, 128);
    if (t == 0) release_add(p.counters + tile.expert * p.counter_blocks + rows.tma_row / 64, 1);
  }
}

}  // namespace moerun::cuda::sm90
