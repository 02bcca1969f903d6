// CPU oracle: all-to-all dispatch (DESIGN.md stage 2, all-to-all backend). Every source rank's
// tokens go only to the ranks owning their experts, straight into each receiver's masked or
// contiguous layout, quantized once per token as the single-rank permute does (FP8 1x128 or BF16
// rows). The layout is deterministic: inside a receiver's expert, rows are ordered by source rank,
// then by token.
#pragma once

#include <cstdint>
#include <vector>

#include "core/expert_placement.h"
#include "cpu/permute.h"
#include "moerun/host_tensor.h"

namespace moerun::cpu {

// One source rank's routed tokens (host views): hidden [T_s, H] bf16, topk_ids [T_s, k] i32
// global ids in [-1, E) (distinct per token), topk_weights [T_s, k] f32.
struct EpRankTokens {
  TensorView hidden;
  TensorView topk_ids;
  TensorView topk_weights;
};

struct EpDispatchOptions {
  Layout layout = Layout::kMasked;
  // Masked: rows per local expert on every receiver, a multiple of 128 >= the rows any expert
  // receives; 0 derives it from the total token count.
  std::int64_t m_max = 0;
  // A received row's origin is packed as source_rank * slot_stride + t * k + j; 0 = the largest
  // T_s * k.
  std::int64_t slot_stride = 0;
};

// What one rank received: its layout (tokens, scales MN-major as core/scale_layout.h, masked_m,
// m_indices; src2dst is left undefined, a source-side notion) and where each row came from.
struct EpReceived {
  Permuted layout;
  HostTensor origin;  // [rows] i32: source_rank * slot_stride + t * k + j; -1 for rows of no token
};

// What one source rank sent, for the combine that brings the results back.
struct EpSent {
  HostTensor dest_rank;  // [T_s, k] i32: the rank that computes the slot, -1 when skipped
  HostTensor dest_row;   // [T_s, k] i32: the slot's row in that rank's layout, -1 when skipped
};

struct EpDispatched {
  std::int64_t slot_stride = 0;
  HostTensor counts;  // [R, E] i32: tokens of source rank s that chose global expert g
  std::vector<EpReceived> received;  // [R]
  std::vector<EpSent> sent;          // [R]
};

EpDispatched ep_dispatch(const ExpertPlacement& placement, const std::vector<EpRankTokens>& ranks,
                         int top_k, DType weight_dtype, const EpDispatchOptions& options);

}  // namespace moerun::cpu
