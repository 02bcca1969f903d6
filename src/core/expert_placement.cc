#include "core/expert_placement.h"

#include <string>

#include "moerun/errors.h"
#include "moerun/expert_map.h"

namespace moerun {

namespace {

void check_sizes(int num_experts, int num_ranks) {
  check_arg(num_ranks >= 1, "ep_size", ">= 1", num_ranks);
  check_arg(
      num_experts >= 1 && num_experts % num_ranks == 0, "num_experts",
      "a positive multiple of ep_size (" + std::to_string(num_ranks) + ") for expert parallelism",
      num_experts);
}

template <class MapOf>
std::vector<std::vector<std::int32_t>> maps_of(int num_experts, int num_ranks, MapOf map_of) {
  check_sizes(num_experts, num_ranks);
  std::vector<std::vector<std::int32_t>> maps;
  for (int r = 0; r < num_ranks; ++r) maps.push_back(map_of(num_experts, num_ranks, r));
  return maps;
}

}  // namespace

ExpertPlacement ExpertPlacement::contiguous(int num_experts, int num_ranks) {
  return from_expert_maps(maps_of(num_experts, num_ranks, contiguous_expert_map));
}

ExpertPlacement ExpertPlacement::round_robin(int num_experts, int num_ranks) {
  return from_expert_maps(maps_of(num_experts, num_ranks, round_robin_expert_map));
}

ExpertPlacement ExpertPlacement::from_expert_maps(
    const std::vector<std::vector<std::int32_t>>& maps) {
  const int ranks = static_cast<int>(maps.size());
  check_arg(ranks >= 1, "expert maps", "one per rank", 0);
  const int experts = static_cast<int>(maps.front().size());
  check_sizes(experts, ranks);
  const int local = experts / ranks;
  ExpertPlacement p;
  p.num_ranks_ = ranks;
  p.owner_.assign(static_cast<std::size_t>(experts), -1);
  p.local_.assign(static_cast<std::size_t>(experts), -1);
  p.global_.assign(static_cast<std::size_t>(ranks * local), -1);
  for (int r = 0; r < ranks; ++r) {
    const std::vector<std::int32_t>& map = maps[static_cast<std::size_t>(r)];
    const int placed = validate_expert_map(map, experts);
    check_arg(placed == local, "local experts of rank " + std::to_string(r),
              std::to_string(local) + " (num_experts / ep_size, the same on every rank)", placed);
    for (int g = 0; g < experts; ++g) {
      const int id = map[static_cast<std::size_t>(g)];
      if (id < 0) continue;
      const int other = p.owner_[static_cast<std::size_t>(g)];
      check_arg(other < 0, "owner of expert " + std::to_string(g),
                "one rank (redundant experts are not supported)",
                "ranks " + std::to_string(other) + " and " + std::to_string(r));
      p.owner_[static_cast<std::size_t>(g)] = r;
      p.local_[static_cast<std::size_t>(g)] = id;
      p.global_[static_cast<std::size_t>(r * local + id)] = g;
    }
  }
  // R ranks of E_l distinct local ids each place E experts, none twice: every expert has an owner.
  return p;
}

std::vector<std::int32_t> ExpertPlacement::expert_map(int rank) const {
  std::vector<std::int32_t> map(owner_.size(), -1);
  for (std::size_t g = 0; g < owner_.size(); ++g) {
    if (owner_[g] == rank) map[g] = local_[g];
  }
  return map;
}

}  // namespace moerun
