// Grouped GEMM heuristics: problem -> kernel variant. Only a handful of variants are compiled
// (gemm/sm90_variants.h); these rules pick among them.
//
// Fixed by the variants rather than chosen here, and why:
//  - BLOCK_K = 128 bytes of K (64 bf16, 128 e4m3): one 128-byte swizzle row per stage, and for FP8
//    exactly one scale block, so the promotion happens once per stage.
//  - BLOCK_N: BF16 256 (128 fp32 accumulators per thread still fit; the widest reuse of each A
//    stage), FP8 128 (partial + promoted accumulators, 2 x 64 registers; one weight scale per
//    tile).
//  - stages: as many as fit in shared memory beside the epilogue slab (4-8).
//  - clusters / TMA multicast: none yet (each CTA loads its own A and B tiles).
#include "cuda/gemm_heuristics.h"

namespace moerun::cuda {

GemmChoice choose_gemm_variant(const GemmProblem& problem) {
  using sm90::GemmVariant;
  if (problem.rows_per_group <= 64) {
    // Few rows per expert (decode): a 128-row tile would be at least half padding, and the time
    // goes to streaming the weights; one math warpgroup leaves room for more stages in flight.
    return {problem.fp8 ? GemmVariant::kFp8M64N128 : GemmVariant::kBf16M64N256,
            "rows per group <= 64: 64-row tiles, deeper pipeline"};
  }
  // Two math warpgroups share each B stage: half the shared-memory and L2 traffic per FLOP.
  return {problem.fp8 ? GemmVariant::kFp8M128N128 : GemmVariant::kBf16M128N256,
          "rows per group > 64: 128-row tiles, two math warpgroups"};
}

}  // namespace moerun::cuda
