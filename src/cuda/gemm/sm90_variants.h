// The grouped GEMM variants that are compiled (each is one template instantiation: keep the list
// short, CI builds all of them on 2 cores). The heuristic (cuda/gemm_heuristics.cc) picks one.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "cuda/gemm/sm90_params.h"

namespace moerun::cuda::sm90 {

enum class GemmVariant {
  kBf16M128N256,  // BF16, two math warpgroups, 4 stages (epilogue in two rounds of 128 columns)
  kBf16M128N128,  // BF16, two math warpgroups, 6 stages
  kBf16M64N256,   // BF16, one math warpgroup, 5 stages (decode: few rows per expert)
  kFp8M128N128,   // FP8, two math warpgroups, 5 stages
  kFp8M128N192,   // FP8, two math warpgroups, 4 stages (1.5x the work per K block of N128)
  kFp8M128N112,   // FP8, two math warpgroups, 6 stages (wave fill at N = 7168: 64 N blocks)
  kFp8M128N160,   // FP8, two math warpgroups, 5 stages (wave fill at N = 7168: 45 N blocks)
  kFp8M64N128,    // FP8, one math warpgroup, 8 stages (decode)
  // Clusters of 2 CTAs on neighbouring row blocks of one N block: each loads half of the B tile
  // and multicasts it to both (half the B traffic from L2).
  kBf16M128N256C2,
};
inline constexpr int kNumGemmVariants = 9;

struct VariantShape {
  bool fp8;
  int block_m;
  int block_n;
  int block_k;  // 128 bytes of K: 64 bf16 / 128 e4m3
  int stages;
  int cluster_m = 1;  // CTAs per cluster along M (sharing B by TMA multicast)
};

// The one table of tile shapes: the kernels' template arguments and the host's tensor map boxes
// both come from it. Stages: as many as fit beside the epilogue buffer in 227 KiB (the kernel's
// static_assert checks it).
inline constexpr VariantShape kVariantShapes[] = {
    {false, 128, 256, 64, 4},    {false, 128, 128, 64, 6},    {false, 64, 256, 64, 5},
    {true, 128, 128, 128, 5},    {true, 128, 192, 128, 4},    {true, 128, 112, 128, 6},
    {true, 128, 160, 128, 5},    {true, 64, 128, 128, 8},     {false, 128, 256, 64, 4, 2},
};

static_assert(sizeof(kVariantShapes) / sizeof(kVariantShapes[0]) == kNumGemmVariants);

constexpr VariantShape variant_shape(GemmVariant variant) {
  return kVariantShapes[static_cast<int>(variant)];
}

// Launch `variant` on `num_sms` CTAs (defined in sm90_grouped_gemm_{bf16,fp8}.cu).
void launch_bf16(GemmVariant variant, const GroupedGemmMaps& maps, const GroupedGemmParams& p,
                 int num_sms, cudaStream_t stream);
void launch_fp8(GemmVariant variant, const GroupedGemmMaps& maps, const GroupedGemmParams& p,
                int num_sms, cudaStream_t stream);

inline void launch_variant(GemmVariant variant, const GroupedGemmMaps& maps,
                           const GroupedGemmParams& p, int num_sms, cudaStream_t stream) {
  if (variant_shape(variant).fp8) {
    launch_fp8(variant, maps, p, num_sms, stream);
  } else {
    launch_bf16(variant, maps, p, num_sms, stream);
  }
}

}  // namespace moerun::cuda::sm90
