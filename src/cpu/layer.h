// CPU oracle: the whole MoE layer forward, and the standard EP mode simulated over R ranks.
#pragma once

#include <cstdint>

#include "moerun/config.h"
#include "moerun/forward.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun::cpu {

struct ForwardOptions {
  Layout layout = Layout::kMasked;
  std::int64_t alignment = 128;  // GEMM row block: M_max multiple, contiguous padding
  std::int64_t m_max = 0;        // masked: 0 derives it from T
  // Have the down GEMM report per-row-block progress and the combine consume it, as single-batch
  // overlap does. The result is bitwise the same either way.
  bool overlap = false;
  // What topk_ids holds: global ids (mapped through config's placement) or local ones.
  ExpertIds ids = ExpertIds::kGlobal;
  // Global ids only, optional: a host expert_map [E] i32 used instead of config's placement.
  TensorView expert_map = {};
};

// One rank's layer: hidden [T, H] bf16 (or pre-quantized FP8, moerun/forward.h), topk_ids [T, k]
// global ids in [-1, E) (or, options.ids kLocal, local ids in [-1, E_l)), topk_weights [T, k] f32;
// weights hold this rank's E_l experts (config's placement). Writes out [T, H] times
// config.output_scale: bf16, or f32 for a partial output that the EP reduction sums.
void moe_forward(const MoeConfig& config, const MoeWeights& local_weights,
                 const HiddenStates& hidden, const TensorView& topk_ids,
                 const TensorView& topk_weights, const TensorView& out,
                 const ForwardOptions& options = {});

// The standard EP mode on one machine: ranks 0..config.ep_size-1 each run moe_forward on their
// slice of `all_weights` (all E experts, contiguous placement: no expert_map) with f32 partial
// outputs, which are summed in rank order and rounded to bf16 once, into out [T, H].
void moe_forward_standard_ep(const MoeConfig& config, const MoeWeights& all_weights,
                             const TensorView& hidden, const TensorView& topk_ids,
                             const TensorView& topk_weights, const TensorView& out,
                             const ForwardOptions& options = {});

}  // namespace moerun::cpu
