// Which grouped GEMM variant runs a problem (host only, plain C++): one rule per choice, each with
// its reason, in gemm_heuristics.cc.
#pragma once

#include <cstdint>
#include <string>

#include "cuda/gemm/sm90_variants.h"

namespace moerun::cuda {

struct GemmProblem {
  bool fp8 = false;
  // Masked: E_l groups of expected_m rows (M_max when unknown); contiguous: one group of M_sum rows
  // (its 128-aligned segments are what the row blocks see).
  int groups = 1;
  std::int64_t rows_per_group = 0;
  std::int64_t n = 0;
  std::int64_t k = 0;
  int num_sms = 132;
};

struct GemmChoice {
  sm90::GemmVariant variant;
  const char* reason;  // the rule that decided, for logs and benchmarks
  // Contiguous layout: the tile walk takes bands of this many row blocks, N block by N block
  // inside a band (sm90_scheduler.cuh); 1 is row block by row block.
  int raster_rows = 1;
};

GemmChoice choose_gemm_variant(const GemmProblem& problem);

// A variant's tile shape as a name: dtype, BLOCK_M, BLOCK_N, cluster ("fp8_M128N192C2").
std::string gemm_variant_name(sm90::GemmVariant variant);

// Tests and benchmarks only: every later choice of this dtype returns `variant` (a value of
// sm90::GemmVariant), until called with -1. Results must not change, only the speed.
void force_gemm_variant_for_testing(int variant);

// Tests and benchmarks only: every later contiguous choice walks bands of `rows` row blocks (> 0),
// until called with 0. Results must not change, only the speed.
void force_gemm_raster_rows_for_testing(int rows);

}  // namespace moerun::cuda
