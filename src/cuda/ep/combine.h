// All-to-all combine, sending half: every row a rank computed goes back to the source rank and
// slot it came from (the receive buffer [slot_stride, H] bf16 in the source's window), then
// Phase::kCombine is signalled. The source's own combine (cuda/combine.h over those rows, the
// single-rank kernel) sums each token's rows in fp32 in slot order.
//
// Single-batch overlap: with `counters`, an overlap kernel on a second stream sends each row block
// as soon as the down GEMM's counter for it reaches `threshold` (acquire), while the GEMM computes
// the rest. It gives up on a block whose count has not moved for `patience_ns` (its GEMM tiles may
// wait for SMs the overlap kernel holds) and leaves it, and the CTA's later blocks, to the
// finishing pass, which runs after the GEMM in stream order and sends every block not yet sent.
// Either way every row is sent exactly once, from the same bytes, so the result is the same bits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/ep/sync.h"
#include "moerun/config.h"

namespace moerun::cuda::ep {

struct CombineSendArgs {
  Layout layout = Layout::kMasked;
  const std::uint16_t* down = nullptr;  // [rows, H] bf16 (this rank's layout)
  const int* origin = nullptr;          // [rows] i32 (this rank's window)
  const int* masked_m = nullptr;        // [E_l]
  const int* m_indices = nullptr;       // contiguous: [capacity]
  const int* m_sum = nullptr;           // contiguous: [1]
  int local_experts = 0;
  std::int64_t m_max = 0;     // masked
  std::int64_t capacity = 0;  // contiguous rows
  int hidden_size = 0;
  std::int64_t slot_stride = 0;
  std::size_t return_offset = 0;  // [slot_stride, H] bf16 in every window
  // Overlap (masked only): [E_l * m_max / 64] GEMM counters, complete at `threshold`.
  int* counters = nullptr;
  int threshold = 0;
  int* gave_up = nullptr;  // [1] device: overlap CTAs that left their blocks to the finishing pass
};

// Rows per unit of work: the GEMM's overlap block (cuda/gemm_shape.h kGemmBlockM).
inline constexpr int kCombineBlockRows = 64;
// CTAs of the overlap kernel (the combine's share of the SMs while the GEMM runs).
inline constexpr int kOverlapCtas = 8;

// Sends every row (no overlap), then signals.
void send_results(const RankContext& ctx, const CombineSendArgs& args, cudaStream_t stream);
// The overlap kernel, on the second stream; no signal.
void send_results_overlapped(const RankContext& ctx, const CombineSendArgs& args,
                             std::uint64_t patience_ns, cudaStream_t stream);
// After the GEMM and the overlap kernel: the blocks the overlap kernel did not send, then signals.
void finish_sending_results(const RankContext& ctx, const CombineSendArgs& args,
                            cudaStream_t stream);

}  // namespace moerun::cuda::ep
