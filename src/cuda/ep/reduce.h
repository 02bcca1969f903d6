// Standard backend (oracle cpu/ep_layer.h ep_forward_standard): the reduction of the ranks' f32
// partials.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/ep/sync.h"

namespace moerun::cuda::ep {

// out [rows, H] bf16 = the sum over ranks 0..R-1, in rank order from 0.0f, of rows
// [first_row, first_row + rows) of each rank's partial [T, H] f32 (at partial_offset in every
// window), rounded once: cpu::PartialSum's operations bit for bit.
void sum_partials(const RankContext& ctx, std::size_t partial_offset, std::int64_t first_row,
                  std::int64_t rows, int hidden_size, std::uint16_t* out, cudaStream_t stream);

// out [count] bf16 = in [count] f32, round-to-nearest-even (count a multiple of 8).
void round_to_bf16(const float* in, std::int64_t count, std::uint16_t* out, cudaStream_t stream);

}  // namespace moerun::cuda::ep
