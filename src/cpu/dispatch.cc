#include "cpu/dispatch.h"

#include "core/checks.h"
#include "moerun/errors.h"

namespace moerun::cpu {

HostTensor map_to_local(const TensorView& topk_ids, int num_experts, int ep_size, int ep_rank) {
  check_arg(ep_size >= 1 && num_experts % ep_size == 0, "ep_size",
            "a divisor of num_experts (" + std::to_string(num_experts) + ")", ep_size);
  check_arg(ep_rank >= 0 && ep_rank < ep_size, "ep_rank",
            "0 <= ep_rank < " + std::to_string(ep_size), ep_rank);
  detail::check_topk_ids(topk_ids, num_experts);
  const int local_experts = num_experts / ep_size;
  const int first = ep_rank * local_experts;
  HostTensor local(DType::kI32, topk_ids.shape());
  const int* ids = topk_ids.data_as<const int>();
  int* out = local.data<int>();
  for (std::int64_t i = 0; i < local.numel(); ++i) {
    const int id = ids[i];
    // -1 is the only "skip"; a `> 0` test here once dropped local expert 0.
    const bool owned = id >= first && id < first + local_experts;
    out[i] = owned ? id - first : -1;
  }
  return local;
}

}  // namespace moerun::cpu
