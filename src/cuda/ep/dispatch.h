// All-to-all dispatch, second half: every token's row, quantized once (FP8 1x128 with its scales,
// or the BF16 row as is), written straight into the layout of each rank owning one of its experts,
// with the row's origin (oracle cpu/ep_dispatch.h). Then signals Phase::kDispatch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/ep/route.h"
#include "cuda/ep/sync.h"

namespace moerun::cuda::ep {

// Where the receive buffers sit in every window (the same offsets on every rank).
struct ReceiveOffsets {
  std::size_t tokens = 0;  // [rows, H] fp8_e4m3 or bf16
  std::size_t scales = 0;  // FP8: f32 MN-major (core/scale_layout.h), groups of `scale_rows` rows
  std::size_t origin = 0;  // [rows] i32: source_rank * slot_stride + t * k + j
};

struct DispatchArgs {
  const std::uint16_t* hidden = nullptr;  // [T, H] bf16
  const int* topk_ids = nullptr;          // [T, k] global ids
  const int* slot_pos = nullptr;          // [T, k] from route_slots
  const int* send_base = nullptr;         // [E] from derive_layout
  std::int64_t tokens = 0;
  int top_k = 0;
  int hidden_size = 0;
  bool fp8 = false;
  std::int64_t slot_stride = 0;
  std::int64_t scale_rows = 0;  // FP8: rows per scale group in the receivers' layout (M_max or all)
  int* combine_src2dst = nullptr;  // [T, k] out: t * k + j where the slot was sent, else -1
};

void dispatch_tokens(const RankContext& ctx, const PlacementTables& placement,
                     const ReceiveOffsets& offsets, const DispatchArgs& args, cudaStream_t stream);

}  // namespace moerun::cuda::ep
