// Persistent tile scheduler of the grouped GEMM, walked by the TMA producer thread of each CTA
// (it hands every tile to its math warps with the tile's stages). Cluster c of a grid of G clusters
// takes the tile units c, c + G, c + 2G, ... of one sequence; a unit is kClusterM row blocks of
// one N block, CTA r of the cluster computing row block kClusterM * unit + r. Without clusters a
// unit is one tile.
//
// With clusters of 2 along M, the two CTAs of a cluster share the B tile (each loads half of it and
// multicasts it to both) when both of their row blocks hold tokens of the same expert; otherwise
// each loads its own. A CTA whose row block holds no token gets a dummy tile: it takes part in the
// stages (the peer's producer waits for both CTAs' math warps) but loads and computes nothing. A
// unit where neither row block holds a token is skipped by both CTAs.
//
// Unit order:
//  - masked: group by group, then row unit by row unit, then N block (the N blocks of one row
//    block run side by side on neighbouring CTAs, so its A rows are read from DRAM once); group e
//    has ceil(masked_m[e] / BLOCK_M) row blocks; experts with no rows have no tiles at all
//    (nothing loaded, nothing computed);
//  - contiguous: bands of p.raster_rows row blocks, N block by N block inside a band, row unit by
//    row unit inside an N block (the CTAs running at once share a few A row blocks and a few B
//    column blocks in L2; 1 is the masked order). Row block i of M_sum is a tile row when
//    m_indices[i * BLOCK_M] is a local expert;
//    a padding block (-1: segments are 128-aligned, so its first row decides) is skipped before
//    any load. `used_row_blocks` (one past the last valid block, found once per CTA) ends the walk,
//    so the padding past M_sum costs nothing.
#pragma once

#include "cuda/gemm/sm90_params.h"

namespace moerun::cuda::sm90 {

// A tile of this CTA. Kept small: the producer thread runs with 40 registers.
struct Tile {
  static constexpr int kDummy = -2;  // `expert` of a dummy tile (see above)
  int expert;
  int n_block;
  int a_row;       // first row: inside the expert's group (masked) or of M_sum (contiguous)
  bool multicast;  // clusters: the B tile is shared with the peer CTA

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

template <int BLOCK_M, int kClusterM>
class Scheduler {
 public:
  __device__ explicit Scheduler(int used_row_blocks)
      : used_row_blocks_(used_row_blocks),
        next_(static_cast<int>(blockIdx.x) / kClusterM),
        rank_(static_cast<int>(blockIdx.x) % kClusterM) {}

  // The next tile of this CTA, or false when none is left. `p` is the kernel's __grid_constant__
  // parameter: read in place (constant bank), it costs no registers.
  __device__ bool next(const GroupedGemmParams& p, Tile& tile) {
    for (;;) {
      const int index = next_;
      next_ += static_cast<int>(gridDim.x) / kClusterM;
      if (p.masked_m != nullptr) {
        while (index >= group_begin_ + group_tiles_) {
          group_begin_ += group_tiles_;
          if (++group_ >= p.experts) return false;
          const int rows = min(max(__ldg(p.masked_m + group_), 0), p.m_max);
          group_blocks_ = (rows + BLOCK_M - 1) / BLOCK_M;
          group_tiles_ = (group_blocks_ + kClusterM - 1) / kClusterM * p.n_blocks;
        }
        const int local = index - group_begin_;
        const int unit = local / p.n_blocks;
        const int row_block = unit * kClusterM + rank_;
        tile.expert = row_block < group_blocks_ ? group_ : Tile::kDummy;
        tile.n_block = local % p.n_blocks;
        tile.a_row = row_block * BLOCK_M;
        tile.multicast = kClusterM > 1 && unit * kClusterM + kClusterM - 1 < group_blocks_;
        return true;
      }
      const int raster_units = max(1, p.raster_rows / kClusterM);
      const int units = (used_row_blocks_ + kClusterM - 1) / kClusterM;
      const int band_tiles = raster_units * p.n_blocks;
      const int bands = (units + raster_units - 1) / raster_units;
      if (index >= bands * band_tiles) return false;
      const int within = index % band_tiles;
      const int unit = index / band_tiles * raster_units + within % raster_units;
      if (unit >= units) continue;  // the last band's units past the used row blocks
      // The expert of each of the unit's row blocks (-1: none, padding or past the used ones).
      int experts[kClusterM];
#pragma unroll
      for (int r = 0; r < kClusterM; ++r) {
        const int row_block = unit * kClusterM + r;
        const int e = row_block < used_row_blocks_ ? __ldg(p.m_indices + row_block * BLOCK_M) : -1;
        experts[r] = e >= 0 && e < p.experts ? e : -1;
      }
      bool any = false;
#pragma unroll
      for (int r = 0; r < kClusterM; ++r) any |= experts[r] >= 0;
      if (!any) continue;  // padding units: no loads, no math, in every CTA of the cluster
      // NOTE: a select, not experts[rank_]: a run-time index puts the array in local memory.
      const int mine = kClusterM > 1 && rank_ != 0 ? experts[kClusterM - 1] : experts[0];
      tile.expert = mine >= 0 ? mine : Tile::kDummy;
      tile.n_block = within / raster_units;
      tile.a_row = (unit * kClusterM + rank_) * BLOCK_M;
      tile.multicast = kClusterM > 1 && experts[0] >= 0 && experts[0] == experts[kClusterM - 1];
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
  int group_blocks_ = 0;
};

}  // namespace moerun::cuda::sm90
