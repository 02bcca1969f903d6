// Grouped GEMM heuristics: problem -> kernel variant. Only a handful of variants are compiled
// (gemm/sm90_variants.h); these rules pick among them.
//
// Fixed by the variants rather than chosen here, and why:
//  - BLOCK_K = 128 bytes of K (64 bf16, 128 e4m3): one 128-byte swizzle row per stage, and for FP8
//    exactly one scale block, so the promotion happens once per stage.
//  - BLOCK_N: BF16 256 or 128 (128 or 64 fp32 accumulators per thread); FP8 112, 128, 160 or 192
//    (the promoted sums and the K block's partial: 2 x N / 2 registers; 192 is the widest that
//    fits 232 registers). Wider tiles give the math warps more tensor-core time per K block to
//    hide their scalar work and read less of A and B per FLOP; narrower ones fill the last wave.
//  - stages: as many as fit in shared memory beside the epilogue buffer (4-8).
#include "cuda/gemm_heuristics.h"

#include <atomic>
#include <iterator>
#include <string>

namespace moerun::cuda {

namespace {

using sm90::GemmVariant;

std::atomic<int> forced_variant{-1};
std::atomic<int> forced_raster_rows{0};

// Contiguous tile order: bands of 16 row blocks (2048 rows), N block by N block inside a band, so
// the ~132 tiles running at once share ~16 A row blocks and ~8 B column blocks in L2 instead of
// ~4 row blocks and all of B's N blocks. Measured on the H200 (2026-11-25, contiguous issue-4
// shapes): BF16 +3-5%, FP8 +1.5% at K 7168 and within noise (+-1%) at K 2048; bands of 8 about
// the same.
constexpr int kContiguousRasterRows = 16;

// Throughput of a variant on full tiles relative to the best one of its dtype (`moerun bench-gemm
// --variant all`, contiguous shapes, H200; docs/gemm.md has the run).
struct Candidate {
  GemmVariant variant;
  double speed;
};
constexpr Candidate kBf16Candidates[] = {
    {GemmVariant::kBf16M128N256, 1.0},
    {GemmVariant::kBf16M128N128, 0.93},
};
constexpr Candidate kFp8Candidates[] = {
    {GemmVariant::kFp8M128N192, 1.0},
    {GemmVariant::kFp8M128N128, 0.96},
    {GemmVariant::kFp8M128N160, 0.94},
    {GemmVariant::kFp8M128N112, 0.81},
};

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::string gemm_variant_name(sm90::GemmVariant variant) {
  const sm90::VariantShape s = sm90::variant_shape(variant);
  // NOTE: appended piece by piece; GCC 12 warns (-Wrestrict, a false positive) on "lit" + string.
  std::string name = s.fp8 ? "fp8_M" : "bf16_M";
  name += std::to_string(s.block_m);
  name += 'N';
  name += std::to_string(s.block_n);
  if (s.cluster_m > 1) {
    name += 'C';
    name += std::to_string(s.cluster_m);
  }
  return name;
}

void force_gemm_variant_for_testing(int variant) { forced_variant.store(variant); }

void force_gemm_raster_rows_for_testing(int rows) { forced_raster_rows.store(rows); }

namespace {

GemmChoice choose_variant(const GemmProblem& problem) {
  const int forced = forced_variant.load();
  if (forced >= 0 && forced < sm90::kNumGemmVariants &&
      sm90::variant_shape(static_cast<GemmVariant>(forced)).fp8 == problem.fp8) {
    return {static_cast<GemmVariant>(forced), "forced (tests/benchmarks)"};
  }
  if (problem.rows_per_group <= 64) {
    // Few rows per expert (decode): a 128-row tile would be at least half padding, and the time
    // goes to streaming the weights; one math warpgroup leaves room for more stages in flight.
    return {problem.fp8 ? GemmVariant::kFp8M64N128 : GemmVariant::kBf16M64N256,
            "rows per group <= 64: 64-row tiles, deepest pipeline"};
  }
  if (!problem.fp8) {
    // Groups of 2 to 8 row blocks of 128: a B tile serves few row blocks, so its L2 reads weigh;
    // the cluster pair shares them (BF16 masked 4 x 256, N 7168, K 2048: +17%; 2 x 512, N 4096,
    // K 7168: +4.5%; H200 2026-12-01, same SM clock). Contiguous groups of thousands of rows
    // already reuse each B tile across a band of row blocks in L2: no gain there.
    const std::int64_t row_blocks = ceil_div(problem.rows_per_group, 128);
    if (row_blocks >= 2 && row_blocks <= 8) {
      return {GemmVariant::kBf16M128N256C2,
              "BF16, 2..8 row blocks per group: cluster pairs share the B tile"};
    }
  }
  // Otherwise the variant with the best expected rate: its full-tile speed times the fraction of
  // the last wave's SMs that have work (a persistent CTA per SM walks ceil(tiles / SMs) tiles)
  // times the fractions of its rows that hold tokens and of its columns inside N.
  const Candidate* begin = problem.fp8 ? std::begin(kFp8Candidates) : std::begin(kBf16Candidates);
  const Candidate* end = problem.fp8 ? std::end(kFp8Candidates) : std::end(kBf16Candidates);
  GemmChoice best{begin->variant,
                  "rows per group > 64: best speed x wave fill x row fill x column fill"};
  double best_score = -1.0;
  const std::int64_t sms = problem.num_sms > 0 ? problem.num_sms : 132;
  for (const Candidate* c = begin; c != end; ++c) {
    const sm90::VariantShape shape = sm90::variant_shape(c->variant);
    const std::int64_t row_blocks = ceil_div(problem.rows_per_group, shape.block_m);
    const std::int64_t n_blocks = ceil_div(problem.n, shape.block_n);
    const std::int64_t tiles = std::int64_t{problem.groups} * row_blocks * n_blocks;
    const double wave_fill =
        static_cast<double>(tiles) / static_cast<double>(ceil_div(tiles, sms) * sms);
    const double row_fill = static_cast<double>(problem.rows_per_group) /
                            static_cast<double>(row_blocks * shape.block_m);
    const double col_fill =
        static_cast<double>(problem.n) / static_cast<double>(n_blocks * shape.block_n);
    const double score = c->speed * wave_fill * row_fill * col_fill;
    if (score > best_score * 1.02) {  // ties (within 2%) go to the earlier, larger tile
      best_score = score;
      best.variant = c->variant;
    }
  }
  return best;
}

}  // namespace

GemmChoice choose_gemm_variant(const GemmProblem& problem) {
  GemmChoice choice = choose_variant(problem);
  const int forced_rows = forced_raster_rows.load();
  choice.raster_rows = forced_rows > 0 ? forced_rows : kContiguousRasterRows;
  return choice;
}

}  // namespace moerun::cuda
