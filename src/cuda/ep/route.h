// All-to-all dispatch, first half: where every (token, slot) of a rank goes (oracle
// cpu/ep_dispatch.h). Each rank counts its slots per global expert, writes its counts into every
// rank's window (counts[R][E]), and ranks each slot among its own slots of the same expert (token
// order, no atomics deciding any order). Once every rank's counts are in, each rank derives the
// whole group's layouts from the same matrix: its own receive layout (masked_m, segment starts,
// m_indices) and, for each expert, the row at its owner where this rank's tokens start.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/ep/sync.h"
#include "moerun/config.h"

namespace moerun::cuda::ep {

// Device tables of the group's expert placement (core/expert_placement.h).
struct PlacementTables {
  const int* owner = nullptr;      // [E] rank owning each global expert
  const int* local_id = nullptr;   // [E] its local id there
  const int* global_of = nullptr;  // [R * E_l] rank * E_l + local -> global id
  int num_experts = 0;
  int local_experts = 0;
};

// Scratch ints route_slots needs for `slots` (T * k) slots.
std::size_t route_scratch_ints(std::int64_t slots, int num_experts);

// topk_ids [slots] global ids (device) -> slot_pos [slots] (place among this rank's slots of the
// same expert, -1 for skipped slots) and this rank's row counts[ctx.rank][*] in every window at
// counts_offset; then signals Phase::kCounts.
void route_slots(const RankContext& ctx, const PlacementTables& placement, const int* topk_ids,
                 std::int64_t slots, std::size_t counts_offset, int* scratch, int* slot_pos,
                 cudaStream_t stream);

// This rank's view of the group's layout, from the counts every rank wrote.
struct LayoutOutputs {
  int* masked_m = nullptr;    // [E_l]: rows this rank receives per local expert
  int* recv_start = nullptr;  // [E_l]: first row of each local expert in this rank's layout
  int* m_sum = nullptr;       // [1] contiguous: rows including padding (masked: 0)
  int* m_indices = nullptr;   // contiguous: [capacity] local expert of each row, -1 elsewhere
  int* send_base = nullptr;   // [E]: row at the owner where this rank's tokens of the expert start;
                              // -1 where the owner cannot take them (an error is recorded)
};

// Waits (bounded) for every rank's counts, then fills `out`. Masked: expert l's rows start at
// l * m_max and at most m_max fit; contiguous: segments padded to 128 rows, at most `capacity`.
void derive_layout(const RankContext& ctx, const PlacementTables& placement,
                   std::size_t counts_offset, Layout layout, std::int64_t m_max,
                   std::int64_t capacity, const LayoutOutputs& out, cudaStream_t stream);

}  // namespace moerun::cuda::ep
