// BF16 variants of the Hopper grouped GEMM (one translation unit per dtype: the two build in
// parallel).
#include "cuda/gemm/sm90_grouped_gemm.cuh"
#include "cuda/gemm/sm90_variants.h"
#include "moerun/errors.h"

namespace moerun::cuda::sm90 {

void launch_bf16(GemmVariant variant, const GroupedGemmMaps& maps, const GroupedGemmParams& p,
                 int num_sms, cudaStream_t stream) {
  switch (variant) {
    case GemmVariant::kBf16M128N256:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kBf16M128N256>>(maps, p, num_sms, stream);
    case GemmVariant::kBf16M128N128:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kBf16M128N128>>(maps, p, num_sms, stream);
    case GemmVariant::kBf16M64N256:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kBf16M64N256>>(maps, p, num_sms, stream);
    case GemmVariant::kBf16M128N256C2:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kBf16M128N256C2>>(maps, p, num_sms, stream);
    default:
      throw Error("grouped GEMM: not a BF16 variant");
  }
}

}  // namespace moerun::cuda::sm90
