// FP8 (e4m3, DeepSeek-V3 block scales) variants of the Hopper grouped GEMM (one translation unit
// per dtype: the two build in parallel).
#include "cuda/gemm/sm90_grouped_gemm.cuh"
#include "cuda/gemm/sm90_variants.h"
#include "moerun/errors.h"

namespace moerun::cuda::sm90 {

void launch_fp8(GemmVariant variant, const GroupedGemmMaps& maps, const GroupedGemmParams& p,
                int num_sms, cudaStream_t stream) {
  switch (variant) {
    case GemmVariant::kFp8M128N128:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kFp8M128N128>>(maps, p, num_sms, stream);
    case GemmVariant::kFp8M128N192:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kFp8M128N192>>(maps, p, num_sms, stream);
    case GemmVariant::kFp8M128N112:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kFp8M128N112>>(maps, p, num_sms, stream);
    case GemmVariant::kFp8M128N160:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kFp8M128N160>>(maps, p, num_sms, stream);
    case GemmVariant::kFp8M64N128:
      return launch_grouped_gemm<TraitsOf<GemmVariant::kFp8M64N128>>(maps, p, num_sms, stream);
    default:
      throw Error("grouped GEMM: not an FP8 variant");
  }
}

}  // namespace moerun::cuda::sm90
