#include "cpu/dispatch.h"

#include "core/checks.h"
#include "moerun/expert_map.h"

namespace moerun::cpu {

HostTensor map_to_local(const TensorView& topk_ids, std::span<const std::int32_t> expert_map) {
  detail::check_topk_ids(topk_ids, static_cast<int>(expert_map.size()));
  HostTensor local(DType::kI32, topk_ids.shape());
  const auto count = static_cast<std::size_t>(local.numel());
  map_expert_ids({topk_ids.data_as<const std::int32_t>(), count}, expert_map,
                 {local.data<std::int32_t>(), count});
  return local;
}

}  // namespace moerun::cpu
