// Persistent tile scheduler of the grouped GEMM: cluster c of a grid of G clusters takes the tile
// groups c, c + G, c + 2G, ... of one sequence, CTA r of the cluster the r-th N block of each (a
// cluster shares its A tile by multicast; without clusters a CTA is a cluster of one). The TMA
// producer and the math warpgroups each walk it with their own copy and see the same tiles in the
// same order. A cluster's last N group may reach past N: that CTA's tile has n_valid false (its
// loads are zero-filled, nothing is stored), so both CTAs still take part in every stage.
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

struct Tile {
  int expert;
  int n_block;
  int a_row;       // TMA row coordinate inside the group (masked) or in M_sum (contiguous)
  int a_group;     // TMA group coordinate (masked: the expert; contiguous: 0)
  long long row0;  // first row of the tile in A's rows / out's rows (flattened)
  int valid_rows;  // masked: rows of the tile below masked_m (>= 1); contiguous: BLOCK_M
  bool n_valid;    // n_block < ceil(N / BLOCK_N)
};

template <int BLOCK_M, int kClusterN>
class Scheduler {
 public:
  __device__ explicit Scheduler(int used_row_blocks)
      : used_row_blocks_(used_row_blocks),
        next_(static_cast<int>(blockIdx.x) / kClusterN),
        rank_(static_cast<int>(blockIdx.x) % kClusterN) {}

  // The next tile of this CTA, or false when none is left. `p` is the kernel's __grid_constant__
  // parameter: read in place (constant bank), it costs no registers across the main loop.
  __device__ bool next(const GroupedGemmParams& p, Tile& tile) {
    for (;;) {
      const int index = next_;
      next_ += static_cast<int>(gridDim.x) / kClusterN;
      const int n_groups = (p.n_blocks + kClusterN - 1) / kClusterN;
      if (p.masked_m != nullptr) {
        while (index >= group_begin_ + group_tiles_) {
          group_begin_ += group_tiles_;
          if (++group_ >= p.experts) return false;
          group_rows_ = min(max(__ldg(p.masked_m + group_), 0), p.m_max);
          group_tiles_ = (group_rows_ + BLOCK_M - 1) / BLOCK_M * n_groups;
        }
        const int local = index - group_begin_;
        const int m0 = local / n_groups * BLOCK_M;
        tile.expert = group_;
        tile.n_block = local % n_groups * kClusterN + rank_;
        tile.a_row = m0;
        tile.a_group = group_;
        tile.row0 = static_cast<long long>(group_) * p.m_max + m0;
        tile.valid_rows = min(BLOCK_M, group_rows_ - m0);
        tile.n_valid = tile.n_block < p.n_blocks;
        return true;
      }
      const int band_tiles = p.raster_rows * n_groups;
      const int bands = (used_row_blocks_ + p.raster_rows - 1) / p.raster_rows;
      if (index >= bands * band_tiles) return false;
      const int within = index % band_tiles;
      const int row_block = index / band_tiles * p.raster_rows + within % p.raster_rows;
      if (row_block >= used_row_blocks_) continue;  // the last band's rows past the used blocks
      const int row0 = row_block * BLOCK_M;
      const int expert = __ldg(p.m_indices + row0);
      if (expert < 0 || expert >= p.experts) continue;  // padding block: no loads, no math
      tile.expert = expert;
      tile.n_block = within / p.raster_rows * kClusterN + rank_;
      tile.a_row = row0;
      tile.a_group = 0;
      tile.row0 = row0;
      tile.valid_rows = BLOCK_M;
      tile.n_valid = tile.n_block < p.n_blocks;
      return true;
    }
  }

 private:
  int used_row_blocks_;
  int next_;
  int rank_;
  int group_ = -1;
  int group_begin_ = 0;
  int group_tiles_ = 0;
  int group_rows_ = 0;
};

}  // namespace moerun::cuda::sm90
