// Persistent tile scheduler of the grouped GEMM: CTA b of a grid of G takes the tiles b, b + G,
// b + 2G, ... of one sequence. The TMA producer and the math warpgroups each walk it with their
// own copy and see the same tiles in the same order.
//
// Tile order:
//  - masked: group by group, then row block by row block, then N block (the N blocks of one row
//    block run side by side on neighbouring CTAs, so its A rows are read from DRAM once); group e
//    has ceil(masked_m[e] / BLOCK_M) row blocks; experts with no rows have no tiles at all
//    (nothing loaded, nothing computed);
//  - contiguous: bands of p.raster_rows row blocks, N block by N block inside a band, row block by
//    row block inside an N block (the CTAs running at once share a few A row blocks and a few B
//    column blocks in L2; 1 is the masked order). Row block i of M_sum is a tile row when
//    m_indices[i * BLOCK_M] is a local expert;
//    a padding block (-1: segments are 128-aligned, so its first row decides) is skipped before
//    any load. `used_row_blocks` (one past the last valid block, found once per CTA) ends the walk,
//    so the padding past M_sum costs nothing.
#pragma once

#include "cuda/gemm/sm90_params.h"

namespace moerun::cuda::sm90 {

// Kept small: the math warps carry it across their main loop in registers.
struct Tile {
  int expert;
  int n_block;
  int a_row;  // first row: inside the expert's group (masked) or of M_sum (contiguous)

  // TMA group coordinate of A, out and the A scales (masked: the expert; contiguous: 0).
  __device__ int a_group(const GroupedGemmParams& p) const {
    return p.masked_m != nullptr ? expert : 0;
  }
  // First row of the tile in A's and out's rows (flattened).
  __device__ long long row0(const GroupedGemmParams& p) const {
    return p.masked_m != nullptr ? static_cast<long long>(expert) * p.m_max + a_row : a_row;
  }
  // Rows of the tile that hold tokens (a prefix): masked, those below masked_m (>= 1).
  __device__ int masked_valid_rows(const GroupedGemmParams& p, int block_m) const {
    return min(block_m, min(max(__ldg(p.masked_m + expert), 0), p.m_max) - a_row);
  }
};

template <int BLOCK_M>
class Scheduler {
 public:
  __device__ explicit Scheduler(int used_row_blocks)
      : used_row_blocks_(used_row_blocks), next_(static_cast<int>(blockIdx.x)) {}

  // The next tile of this CTA, or false when none is left. `p` is the kernel's __grid_constant__
  // parameter: read in place (constant bank), it costs no registers across the main loop.
  __device__ bool next(const GroupedGemmParams& p, Tile& tile) {
    for (;;) {
      const int index = next_;
      next_ += static_cast<int>(gridDim.x);
      if (p.masked_m != nullptr) {
        while (index >= group_begin_ + group_tiles_) {
          group_begin_ += group_tiles_;
          if (++group_ >= p.experts) return false;
          const int rows = min(max(__ldg(p.masked_m + group_), 0), p.m_max);
          group_tiles_ = (rows + BLOCK_M - 1) / BLOCK_M * p.n_blocks;
        }
        const int local = index - group_begin_;
        const int m0 = local / p.n_blocks * BLOCK_M;
        tile.expert = group_;
        tile.n_block = local % p.n_blocks;
        tile.a_row = m0;
        return true;
      }
      const int band_tiles = p.raster_rows * p.n_blocks;
      const int bands = (used_row_blocks_ + p.raster_rows - 1) / p.raster_rows;
      if (index >= bands * band_tiles) return false;
      const int within = index % band_tiles;
      const int row_block = index / band_tiles * p.raster_rows + within % p.raster_rows;
      if (row_block >= used_row_blocks_) continue;  // the last band's rows past the used blocks
      const int row0 = row_block * BLOCK_M;
      const int expert = __ldg(p.m_indices + row0);
      if (expert < 0 || expert >= p.experts) continue;  // padding block: no loads, no math
      tile.expert = expert;
      tile.n_block = within / p.raster_rows;
      tile.a_row = row0;
      return true;
    }
  }

 private:
  int used_row_blocks_;
  int next_;
  int group_ = -1;
  int group_begin_ = 0;
  int group_tiles_ = 0;
};

}  // namespace moerun::cuda::sm90
