#include "moerun/expert_map.h"

#include <string>

#include "moerun/errors.h"

namespace moerun {

namespace {
void check_ranks(int num_experts, int ep_size, int ep_rank) {
  check_arg(num_experts > 0, "num_experts", "> 0", num_experts);
  check_arg(ep_size >= 1 && ep_size <= num_experts, "ep_size",
            "1 <= ep_size <= num_experts (" + std::to_string(num_experts) + ")", ep_size);
  check_arg(ep_rank >= 0 && ep_rank < ep_size, "ep_rank",
            "0 <= ep_rank < ep_size (" + std::to_string(ep_size) + ")", ep_rank);
}
}  // namespace

std::vector<std::int32_t> contiguous_expert_map(int num_experts, int ep_size, int ep_rank) {
  check_ranks(num_experts, ep_size, ep_rank);
  check_arg(
      num_experts % ep_size == 0, "ep_size",
      "a divisor of num_experts (" + std::to_string(num_experts) + ") for contiguous placement",
      ep_size);
  const int local = num_experts / ep_size;
  std::vector<std::int32_t> map(static_cast<std::size_t>(num_experts), -1);
  for (int l = 0; l < local; ++l) map[static_cast<std::size_t>(ep_rank * local + l)] = l;
  return map;
}

std::vector<std::int32_t> round_robin_expert_map(int num_experts, int ep_size, int ep_rank) {
  check_ranks(num_experts, ep_size, ep_rank);
  std::vector<std::int32_t> map(static_cast<std::size_t>(num_experts), -1);
  for (int e = ep_rank; e < num_experts; e += ep_size)
    map[static_cast<std::size_t>(e)] = e / ep_size;
  return map;
}

int validate_expert_map(std::span<const std::int32_t> expert_map, int num_experts) {
  check_arg(static_cast<std::int64_t>(expert_map.size()) == num_experts, "expert_map size",
            "num_experts (" + std::to_string(num_experts) + ")", expert_map.size());
  int local = 0;
  for (std::int32_t id : expert_map) local += id >= 0 ? 1 : 0;
  check_arg(local >= 1, "expert_map", "at least one local expert (an entry >= 0)", "none");
  // Each local id once: a repeated one would give an expert two rows of the same token.
  std::vector<int> owner(static_cast<std::size_t>(local), -1);
  for (std::size_t e = 0; e < expert_map.size(); ++e) {
    const std::int32_t id = expert_map[e];
    const std::string field = "expert_map[" + std::to_string(e) + "]";
    check_arg(id >= -1 && id < local, field,
              "-1 or a local id in [0, " + std::to_string(local) + ") (the map has " +
                  std::to_string(local) + " local experts)",
              id);
    if (id < 0) continue;
    check_arg(owner[static_cast<std::size_t>(id)] < 0, field,
              "a local id not already given to global expert " +
                  std::to_string(owner[static_cast<std::size_t>(id)]),
              id);
    owner[static_cast<std::size_t>(id)] = static_cast<int>(e);
  }
  return local;
}

std::vector<std::int32_t> local_to_global(std::span<const std::int32_t> expert_map) {
  const int local = validate_expert_map(expert_map, static_cast<int>(expert_map.size()));
  std::vector<std::int32_t> global(static_cast<std::size_t>(local));
  for (std::size_t e = 0; e < expert_map.size(); ++e) {
    if (expert_map[e] >= 0) global[static_cast<std::size_t>(expert_map[e])] = static_cast<int>(e);
  }
  return global;
}

void map_expert_ids(std::span<const std::int32_t> global_ids,
                    std::span<const std::int32_t> expert_map, std::span<std::int32_t> local_ids) {
  check_arg(local_ids.size() == global_ids.size(), "local_ids size",
            std::to_string(global_ids.size()) + " (as global_ids)", local_ids.size());
  const auto experts = static_cast<std::int64_t>(expert_map.size());
  for (std::size_t i = 0; i < global_ids.size(); ++i) {
    const std::int32_t id = global_ids[i];
    check_arg(id >= -1 && id < experts, "topk_ids element " + std::to_string(i),
              "a global expert id in [-1, " + std::to_string(experts) + ")", id);
    // -1 is the only skip: global expert 0 maps like any other.
    local_ids[i] = id < 0 ? -1 : expert_map[static_cast<std::size_t>(id)];
  }
}

}  // namespace moerun
