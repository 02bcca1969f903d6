// FP8 (e4m3, DeepSeek-V3 block scales) variants of the Hopper grouped GEMM, and the variant table.
#include "cuda/gemm/sm90_grouped_gemm.cuh"
#include "cuda/gemm/sm90_variants.h"
#include "moerun/errors.h"

namespace moerun::cuda::sm90 {

using Fp8M128N128 = TraitsOf<GemmVariant::kFp8M128N128>;
using Fp8M64N128 = TraitsOf<GemmVariant::kFp8M64N128>;
using Fp8M128N128C2 = TraitsOf<GemmVariant::kFp8M128N128C2>;

void launch_fp8(GemmVariant variant, const CUtensorMap& tma_a, const CUtensorMap& tma_b,
                const GroupedGemmParams& p, int num_sms, cudaStream_t stream) {
  switch (variant) {
    case GemmVariant::kFp8M128N128:
      return launch_grouped_gemm<Fp8M128N128>(tma_a, tma_b, p, num_sms, stream);
    case GemmVariant::kFp8M64N128:
      return launch_grouped_gemm<Fp8M64N128>(tma_a, tma_b, p, num_sms, stream);
    case GemmVariant::kFp8M128N128C2:
      return launch_grouped_gemm<Fp8M128N128C2>(tma_a, tma_b, p, num_sms, stream);
    default:
      throw Error("grouped GEMM: not an FP8 variant");
  }
}

}  // namespace moerun::cuda::sm90
