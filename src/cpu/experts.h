// CPU oracle: the expert computation on a permuted layout (DESIGN.md stages 4-6): gate-up GEMM,
// SiLU-and-mul (re-quantized to FP8 1x128 for FP8 weights), down GEMM. The single-rank layer runs
// it on its own permute; the all-to-all EP oracle on the rows a rank received.
#pragma once

#include "cpu/permute.h"
#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun::cpu {

// `weights` hold the E_l experts the layout's local ids index. Returns down [rows, H] bf16 (rows as
// permuted.rows()); rows that hold no token are never written. With `overlap` (masked layout only)
// the down GEMM reports per-row-block progress and every block a token sits in is checked final,
// as single-batch overlap's consumer would; the result is the same bits either way.
HostTensor run_experts(const MoeConfig& config, const MoeWeights& weights, const Permuted& permuted,
                       bool overlap);

}  // namespace moerun::cpu
