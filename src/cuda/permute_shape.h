// The permute stage's sizes (cuda/permute.h), in plain C++ without CUDA headers: the layer plans
// its workspace with them, in every build (moerun::workspace_bytes works without a GPU).
#pragma once

#include <cstddef>
#include <cstdint>

namespace moerun::cuda {

// Row block of the GEMMs: M_max is a multiple of it and contiguous segments are padded to it.
inline constexpr std::int64_t kPermuteAlignment = 128;
// Local experts the permute kernels handle (shared-memory histograms of E_l ints x 9).
inline constexpr int kPermuteMaxLocalExperts = 1024;
// Slots per chunk of the count and positions kernels (one thread each).
inline constexpr int kPermuteChunk = 256;

// Rows a contiguous layout of T tokens can need: each non-empty expert pads to 128 rows.
std::int64_t contiguous_capacity(std::int64_t tokens, std::int64_t top_k, int num_local_experts);

// Scratch bytes permute needs for T tokens (per-chunk expert counts).
std::size_t permute_workspace_bytes(std::int64_t tokens, std::int64_t top_k, int num_local_experts);

// Chunks of kPermuteChunk slots over T * k slots (at least one).
std::int64_t permute_chunks(std::int64_t slots);

}  // namespace moerun::cuda
