// Where each global expert of an expert-parallel group lives: the group-wide view of every rank's
// expert_map (moerun/expert_map.h: [E] int32, global id -> local id on that rank, or -1), which
// the all-to-all dispatch needs to send each token to its experts' owners.
#pragma once

#include <cstdint>
#include <vector>

namespace moerun {

class ExpertPlacement {
 public:
  // Rank r owns [r * E / R, (r + 1) * E / R): DESIGN.md's default (contiguous_expert_map).
  static ExpertPlacement contiguous(int num_experts, int num_ranks);
  // Expert g on rank g % R with local id g / R (round_robin_expert_map); E a multiple of R.
  static ExpertPlacement round_robin(int num_experts, int num_ranks);
  // From every rank's expert map (maps[r]; each checked by validate_expert_map). Each expert
  // must have exactly one owner and every rank E / R experts; the first violation is rejected
  // naming the rank, the expert and the values.
  static ExpertPlacement from_expert_maps(const std::vector<std::vector<std::int32_t>>& maps);

  int num_experts() const { return static_cast<int>(owner_.size()); }
  int num_ranks() const { return num_ranks_; }
  int num_local_experts() const { return num_experts() / num_ranks_; }
  int owner(int expert) const { return owner_[static_cast<std::size_t>(expert)]; }
  int local_id(int expert) const { return local_[static_cast<std::size_t>(expert)]; }
  // The global expert that has local id `local` on `rank`.
  int global_id(int rank, int local) const {
    return global_[static_cast<std::size_t>(rank * num_local_experts() + local)];
  }
  // [E] owner rank and [E] local id of each expert (for upload to a device).
  const std::vector<int>& owners() const { return owner_; }
  const std::vector<int>& local_ids() const { return local_; }
  // rank r's expert map: [E] local id, or -1 where another rank owns the expert.
  std::vector<std::int32_t> expert_map(int rank) const;

 private:
  int num_ranks_ = 1;
  std::vector<int> owner_, local_;  // [E]
  std::vector<int> global_;         // [R * E_l]: rank * E_l + local -> global id
};

}  // namespace moerun
