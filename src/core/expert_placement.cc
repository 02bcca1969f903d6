#include "core/expert_placement.h"

#include <string>

#include "moerun/errors.h"

namespace moerun {

namespace {

void check_sizes(int num_experts, int num_ranks) {
  check_arg(num_ranks >= 1, "ep_size", ">= 1", num_ranks);
  check_arg(num_experts >= 1 && num_experts % num_ranks == 0, "num_experts",
            "a positive multiple of ep_size (" + std::to_string(num_ranks) + ")", num_experts);
}

std::vector<std::vector<int>> maps_of(int num_experts, int num_ranks, bool round_robin) {
  const int local = num_experts / num_ranks;
  std::vector<std::vector<int>> maps(static_cast<std::size_t>(num_ranks),
                                     std::vector<int>(static_cast<std::size_t>(num_experts), -1));
  for (int g = 0; g < num_experts; ++g) {
    const int rank = round_robin ? g % num_ranks : g / local;
    maps[static_cast<std::size_t>(rank)][static_cast<std::size_t>(g)] =
        round_robin ? g / num_ranks : g % local;
  }
  return maps;
}

}  // namespace

ExpertPlacement ExpertPlacement::contiguous(int num_experts, int num_ranks) {
  check_sizes(num_experts, num_ranks);
  return from_expert_maps(maps_of(num_experts, num_ranks, false));
}

ExpertPlacement ExpertPlacement::round_robin(int num_experts, int num_ranks) {
  check_sizes(num_experts, num_ranks);
  return from_expert_maps(maps_of(num_experts, num_ranks, true));
}

ExpertPlacement ExpertPlacement::from_expert_maps(const std::vector<std::vector<int>>& maps) {
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
    const std::vector<int>& map = maps[static_cast<std::size_t>(r)];
    const std::string name = "expert_map of rank " + std::to_string(r);
    check_arg(static_cast<int>(map.size()) == experts, name + " size",
              std::to_string(experts) + " (num_experts)", map.size());
    for (int g = 0; g < experts; ++g) {
      const int id = map[static_cast<std::size_t>(g)];
      if (id == -1) continue;
      check_arg(id >= 0 && id < local, name + "[" + std::to_string(g) + "]",
                "-1 or a local id in [0, " + std::to_string(local) + ")", id);
      const int other = p.owner_[static_cast<std::size_t>(g)];
      check_arg(other < 0, "owner of expert " + std::to_string(g),
                "one rank (redundant experts are not supported)",
                "ranks " + std::to_string(other) + " and " + std::to_string(r));
      int& slot = p.global_[static_cast<std::size_t>(r * local + id)];
      check_arg(slot < 0, name + "[" + std::to_string(g) + "]",
                "a local id no other expert of the rank has",
                std::to_string(id) + " (also expert " + std::to_string(slot) + ")");
      slot = g;
      p.owner_[static_cast<std::size_t>(g)] = r;
      p.local_[static_cast<std::size_t>(g)] = id;
    }
  }
  for (int g = 0; g < experts; ++g) {
    check_arg(p.owner_[static_cast<std::size_t>(g)] >= 0, "owner of expert " + std::to_string(g),
              "one rank", "none");
  }
  // Every expert has one owner and local ids are distinct per rank, so each rank holding at most
  // E_l ids means each holds exactly E_l: nothing more to check.
  return p;
}

std::vector<int> ExpertPlacement::expert_map(int rank) const {
  std::vector<int> map(owner_.size(), -1);
  for (std::size_t g = 0; g < owner_.size(); ++g) {
    if (owner_[g] == rank) map[g] = local_[g];
  }
  return map;
}

bool ExpertPlacement::is_contiguous() const {
  for (int g = 0; g < num_experts(); ++g) {
    if (contiguous_id(g) != g) return false;
  }
  return true;
}

}  // namespace moerun
