#include "cpu/ep_combine.h"

#include <cstring>
#include <string>

#include "cpu/combine.h"
#include "moerun/errors.h"

namespace moerun::cpu {

HostTensor ep_return_rows(const EpDispatched& dispatched, const std::vector<TensorView>& down,
                          int source_rank, std::int64_t tokens, int top_k) {
  check_arg(down.size() == dispatched.received.size(), "down outputs",
            std::to_string(dispatched.received.size()) + " (one per rank)", down.size());
  const std::int64_t h = down.front().size(down.front().ndim() - 1);
  HostTensor rows(DType::kBF16, {tokens * top_k, h});
  const std::size_t row_bytes = static_cast<std::size_t>(h) * sizeof(bf16);
  for (std::size_t r = 0; r < down.size(); ++r) {
    const HostTensor& origin = dispatched.received[r].origin;
    check_arg(down[r].numel() == origin.numel() * h, "down of rank " + std::to_string(r),
              std::to_string(origin.numel()) + " rows of " + std::to_string(h),
              down[r].shape_string());
    for (std::int64_t row = 0; row < origin.numel(); ++row) {
      const int packed = origin.data<int>()[row];
      if (packed < 0 || packed / dispatched.slot_stride != source_rank) continue;
      const std::int64_t slot = packed % dispatched.slot_stride;
      std::memcpy(rows.data<bf16>() + slot * h, down[r].data_as<const bf16>() + row * h, row_bytes);
    }
  }
  return rows;
}

HostTensor ep_combine_src2dst(const EpSent& sent) {
  HostTensor src2dst(DType::kI32, sent.dest_rank.shape());
  for (std::int64_t i = 0; i < src2dst.numel(); ++i) {
    src2dst.data<int>()[i] = sent.dest_rank.data<int>()[i] >= 0 ? static_cast<int>(i) : -1;
  }
  return src2dst;
}

void ep_combine(const EpDispatched& dispatched, const std::vector<TensorView>& down,
                const std::vector<EpRankTokens>& ranks, const std::vector<TensorView>& outs,
                float output_scale) {
  check_arg(outs.size() == ranks.size(), "EP outputs", std::to_string(ranks.size()), outs.size());
  for (std::size_t s = 0; s < ranks.size(); ++s) {
    const std::int64_t tokens = ranks[s].topk_ids.size(0);
    const int k = static_cast<int>(ranks[s].topk_ids.size(1));
    const HostTensor rows = ep_return_rows(dispatched, down, static_cast<int>(s), tokens, k);
    const HostTensor src2dst = ep_combine_src2dst(dispatched.sent[s]);
    combine(rows.view(), src2dst.view(), ranks[s].topk_weights, outs[s], output_scale);
  }
}

}  // namespace moerun::cpu
