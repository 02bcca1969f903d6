// Where each global expert lives under expert parallelism, from the ranks' expert maps
// (DESIGN.md stage 2: `expert_map [E] int32`, global id -> local id on that rank, or -1).
//
// NOTE: kept in one small file on purpose: the public Layer API is gaining its own expert_map;
// once it lands, this helper builds on that type instead of plain vectors.
#pragma once

#include <cstdint>
#include <vector>

namespace moerun {

class ExpertPlacement {
 public:
  // Rank r owns [r * E / R, (r + 1) * E / R): DESIGN.md's default.
  static ExpertPlacement contiguous(int num_experts, int num_ranks);
  // Expert g on rank g % R with local id g / R (vLLM's --expert-placement-strategy round_robin).
  static ExpertPlacement round_robin(int num_experts, int num_ranks);
  // From every rank's expert map (maps[r][g] = local id of g on rank r, or -1). Each expert must
  // have exactly one owner and each rank E / R experts with local ids 0 .. E / R - 1; the first
  // violation is rejected naming the rank, the expert and the values.
  static ExpertPlacement from_expert_maps(const std::vector<std::vector<int>>& maps);

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
  std::vector<int> expert_map(int rank) const;
  // The id that expert g would have under the contiguous placement: owner * E_l + local id. Ids
  // rewritten this way let code written for the default placement serve any placement.
  int contiguous_id(int expert) const {
    return owner(expert) * num_local_experts() + local_id(expert);
  }
  bool is_contiguous() const;

 private:
  int num_ranks_ = 1;
  std::vector<int> owner_, local_;  // [E]
  std::vector<int> global_;         // [R * E_l]: rank * E_l + local -> global id
};

}  // namespace moerun
