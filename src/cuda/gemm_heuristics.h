// Which grouped GEMM variant runs a problem (host only, plain C++): one rule per choice, each with
// its reason, in gemm_heuristics.cc.
#pragma once

#include <cstdint>

#include "cuda/gemm/sm90_variants.h"

namespace moerun::cuda {

struct GemmProblem {
  bool fp8 = false;
  // Rows each group is expected to have: masked, expected_m (or M_max when unknown); contiguous,
  // M_sum / E_l.
  std::int64_t rows_per_group = 0;
  std::int64_t n = 0;
  std::int64_t k = 0;
  int num_sms = 0;
};

struct GemmChoice {
  sm90::GemmVariant variant;
  const char* reason;  // the rule that decided, for logs and benchmarks
};

GemmChoice choose_gemm_variant(const GemmProblem& problem);

}  // namespace moerun::cuda
