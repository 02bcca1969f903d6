// Expert placement under expert parallelism: expert_map [E] int32, from a global expert id to
// this rank's local id, or -1 where another rank owns the expert (vLLM's expert_map, SGLang's
// local_expert_mapping). A valid map uses each local id of [0, E_l) exactly once, so the distinct
// global ids of a token stay distinct local ids and an expert gets at most one row per token.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moerun {

// moerun's default: rank r owns [r * E_l, (r + 1) * E_l) with E_l = E / ep_size (E a multiple of
// ep_size).
std::vector<std::int32_t> contiguous_expert_map(int num_experts, int ep_size, int ep_rank);

// Global expert e lives on rank e % ep_size as local expert e / ep_size (vLLM's round_robin
// placement); any E >= ep_size.
std::vector<std::int32_t> round_robin_expert_map(int num_experts, int ep_size, int ep_rank);

// Returns E_l, the local experts the map places on its rank. Rejects a map that does not have E
// entries, each -1 or a local id, with the local ids covering [0, E_l) once each and E_l >= 1,
// naming the first bad entry.
int validate_expert_map(std::span<const std::int32_t> expert_map, int num_experts);

// The inverse of a valid map: the global id of each of its E_l local experts.
std::vector<std::int32_t> local_to_global(std::span<const std::int32_t> expert_map);

// CPU helper for id mapping: global ids in [-1, E) -> expert_map[id], and -1 stays -1. An id
// outside [-1, E) is rejected naming its index. `local_ids` has the size of `global_ids` and may
// be the same memory.
void map_expert_ids(std::span<const std::int32_t> global_ids,
                    std::span<const std::int32_t> expert_map, std::span<std::int32_t> local_ids);

}  // namespace moerun
