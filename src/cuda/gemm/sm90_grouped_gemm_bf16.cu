// BF16 variants of the Hopper grouped GEMM (one translation unit per dtype: the two build in
// parallel).
#include "cuda/gemm/sm90_grouped_gemm.cuh"
#include "cuda/gemm/sm90_variants.h"
#include "moerun/errors.h"

namespace moerun::cuda::sm90 {

using Bf16M128N256 = TraitsOf<GemmVariant::kBf16M128N256>;
using Bf16M128N128 = TraitsOf<GemmVariant::kBf16M128N128>;
using Bf16M64N256 = TraitsOf<GemmVariant::kBf16M64N256>;
using Bf16M128N256C2 = TraitsOf<GemmVariant::kBf16M128N256C2>;

void launch_bf16(GemmVariant variant, const CUtensorMap& tma_a, const CUtensorMap& tma_b,
                 const GroupedGemmParams& p, int num_sms, cudaStream_t stream) {
  switch (variant) {
    case GemmVariant::kBf16M128N256:
      return launch_grouped_gemm<Bf16M128N256>(tma_a, tma_b, p, num_sms, stream);
    case GemmVariant::kBf16M128N128:
      return launch_grouped_gemm<Bf16M128N128>(tma_a, tma_b, p, num_sms, stream);
    case GemmVariant::kBf16M64N256:
      return launch_grouped_gemm<Bf16M64N256>(tma_a, tma_b, p, num_sms, stream);
    case GemmVariant::kBf16M128N256C2:
      return launch_grouped_gemm<Bf16M128N256C2>(tma_a, tma_b, p, num_sms, stream);
    default:
      throw Error("grouped GEMM: not a BF16 variant");
  }
}

}  // namespace moerun::cuda::sm90
