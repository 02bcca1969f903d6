#include "cpu/ep_dispatch.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/checks.h"
#include "core/parallel.h"
#include "core/scale_layout.h"
#include "cpu/quant.h"
#include "moerun/errors.h"

namespace moerun::cpu {

namespace {

constexpr std::int64_t kAlignment = 128;  // the GEMMs' row block (masked M_max, segment padding)

std::int64_t round_up(std::int64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace

EpDispatched ep_dispatch(const ExpertPlacement& placement, const std::vector<EpRankTokens>& ranks,
                         int top_k, DType weight_dtype, const EpDispatchOptions& options) {
  const int num_ranks = placement.num_ranks(), experts = placement.num_experts();
  const int local_experts = placement.num_local_experts();
  check_arg(static_cast<int>(ranks.size()) == num_ranks, "EP ranks' tokens",
            std::to_string(num_ranks) + " (one per rank)", ranks.size());
  const bool fp8 = weight_dtype == DType::kFP8E4M3;
  check_arg(fp8 || weight_dtype == DType::kBF16, "weight_dtype", "bf16 or fp8_e4m3",
            dtype_name(weight_dtype));
  const std::int64_t k = top_k;
  const std::int64_t h = ranks.front().hidden.ndim() == 2 ? ranks.front().hidden.size(1) : 0;
  std::int64_t total_tokens = 0, max_slots = 0;
  for (int s = 0; s < num_ranks; ++s) {
    const EpRankTokens& in = ranks[static_cast<std::size_t>(s)];
    const std::string rank = " of rank " + std::to_string(s);
    check_arg(in.hidden.ndim() == 2, "hidden_states" + rank + " rank", "2 ([T, H])",
              in.hidden.ndim());
    const std::int64_t tokens = in.hidden.size(0);
    check_tensor(in.hidden, "hidden_states" + rank, DType::kBF16, {tokens, h}, DeviceType::kCpu);
    check_tensor(in.topk_ids, "topk_ids" + rank, DType::kI32, {tokens, k}, DeviceType::kCpu);
    detail::check_topk_ids(in.topk_ids, experts);
    total_tokens += tokens;
    max_slots = std::max(max_slots, tokens * k);
  }
  if (fp8) {
    check_arg(h % kQuantGroup == 0, "hidden_size", "a multiple of 128 for FP8 weights", h);
  }

  EpDispatched out;
  out.slot_stride =
      options.slot_stride > 0 ? options.slot_stride : std::max<std::int64_t>(1, max_slots);
  check_arg(out.slot_stride >= max_slots, "slot_stride",
            ">= the largest T * k (" + std::to_string(max_slots) + ")", out.slot_stride);
  check_arg(out.slot_stride * num_ranks < (std::int64_t{1} << 31), "slot_stride x ep_size",
            "< 2^31 (origins are i32)", out.slot_stride * num_ranks);
  out.counts = HostTensor(DType::kI32, {num_ranks, experts});
  int* counts = out.counts.data<int>();
  std::fill(counts, counts + out.counts.numel(), 0);
  // position[s][i]: the slot's place among rank s's slots of the same expert, in token order.
  std::vector<std::vector<int>> position(static_cast<std::size_t>(num_ranks));
  for (int s = 0; s < num_ranks; ++s) {
    const TensorView& ids = ranks[static_cast<std::size_t>(s)].topk_ids;
    std::vector<int>& pos = position[static_cast<std::size_t>(s)];
    pos.assign(static_cast<std::size_t>(ids.numel()), -1);
    for (std::int64_t i = 0; i < ids.numel(); ++i) {
      const int g = ids.data_as<const int>()[i];
      if (g >= 0) pos[static_cast<std::size_t>(i)] = counts[s * experts + g]++;
    }
  }

  // Each receiver's layout: per local expert, the sources' rows back to back in rank order.
  // first_row[g]: expert g's first row on its owner; before[s][g]: rows of ranks < s before it.
  std::vector<std::int64_t> first_row(static_cast<std::size_t>(experts));
  std::vector<std::int64_t> before(static_cast<std::size_t>(num_ranks * experts));
  for (int g = 0; g < experts; ++g) {
    std::int64_t sum = 0;
    for (int s = 0; s < num_ranks; ++s) {
      before[static_cast<std::size_t>(s * experts + g)] = sum;
      sum += counts[s * experts + g];
    }
  }
  const std::int64_t m_max =
      options.m_max > 0 ? options.m_max : round_up(std::max<std::int64_t>(1, total_tokens));
  const DType act_dtype = fp8 ? DType::kFP8E4M3 : DType::kBF16;
  const std::int64_t groups = h / kQuantGroup;
  out.received.resize(static_cast<std::size_t>(num_ranks));
  for (int r = 0; r < num_ranks; ++r) {
    Permuted& layout = out.received[static_cast<std::size_t>(r)].layout;
    layout.layout = options.layout;
    layout.expected_m = (total_tokens * k + experts - 1) / experts;
    layout.masked_m = HostTensor(DType::kI32, {local_experts});
    std::int64_t row = 0;
    for (int l = 0; l < local_experts; ++l) {
      const int g = placement.global_id(r, l);
      std::int64_t received = 0;
      for (int s = 0; s < num_ranks; ++s) received += counts[s * experts + g];
      layout.masked_m.data<int>()[l] = static_cast<int>(received);
      if (options.layout == Layout::kMasked) {
        check_arg(received <= m_max, "m_max",
                  ">= the rows expert " + std::to_string(g) + " receives (" +
                      std::to_string(received) + ")",
                  m_max);
        first_row[static_cast<std::size_t>(g)] = l * m_max;
      } else {
        first_row[static_cast<std::size_t>(g)] = row;
        row += round_up(received);
      }
    }
    std::int64_t rows = 0;
    if (options.layout == Layout::kMasked) {
      check_arg(m_max % kAlignment == 0, "m_max", "a multiple of 128", m_max);
      layout.m_max = m_max;
      rows = local_experts * m_max;
      layout.tokens = HostTensor(act_dtype, {local_experts, m_max, h});
      if (fp8) layout.scales = HostTensor(DType::kF32, {local_experts, groups, m_max});
    } else {
      layout.m_sum = rows = row;
      layout.m_indices = HostTensor(DType::kI32, {rows});
      int* m_indices = layout.m_indices.data<int>();
      std::fill(m_indices, m_indices + rows, -1);
      for (int l = 0; l < local_experts; ++l) {
        const std::int64_t first = first_row[static_cast<std::size_t>(placement.global_id(r, l))];
        std::fill(m_indices + first, m_indices + first + layout.masked_m.data<int>()[l], l);
      }
      layout.tokens = HostTensor(act_dtype, {rows, h});
      if (fp8) layout.scales = HostTensor(DType::kF32, {groups, rows});
    }
    HostTensor& origin = out.received[static_cast<std::size_t>(r)].origin;
    origin = HostTensor(DType::kI32, {rows});
    std::fill(origin.data<int>(), origin.data<int>() + rows, -1);
  }

  // Each source token is quantized once and copied to each of its rows, wherever they are.
  const std::size_t row_bytes = static_cast<std::size_t>(h) * dtype_size(act_dtype);
  out.sent.resize(static_cast<std::size_t>(num_ranks));
  for (int s = 0; s < num_ranks; ++s) {
    const EpRankTokens& in = ranks[static_cast<std::size_t>(s)];
    const std::int64_t tokens = in.hidden.size(0);
    EpSent& sent = out.sent[static_cast<std::size_t>(s)];
    sent.dest_rank = HostTensor(DType::kI32, {tokens, k});
    sent.dest_row = HostTensor(DType::kI32, {tokens, k});
    const int* ids = in.topk_ids.data_as<const int>();
    for (std::int64_t i = 0; i < tokens * k; ++i) {
      const int g = ids[i];
      const std::int64_t row =
          g < 0 ? -1
                : first_row[static_cast<std::size_t>(g)] +
                      before[static_cast<std::size_t>(s * experts + g)] +
                      position[static_cast<std::size_t>(s)][static_cast<std::size_t>(i)];
      sent.dest_rank.data<int>()[i] = g < 0 ? -1 : placement.owner(g);
      sent.dest_row.data<int>()[i] = static_cast<int>(row);
      if (g >= 0) {
        EpReceived& to = out.received[static_cast<std::size_t>(placement.owner(g))];
        to.origin.data<int>()[row] = static_cast<int>(s * out.slot_stride + i);
      }
    }
    const auto* src = in.hidden.data_as<const bf16>();
    detail::parallel_for(tokens, 16, [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> values(fp8 ? static_cast<std::size_t>(h) : 0);
      std::vector<fp8e4m3> codes(values.size());
      std::vector<float> scales(fp8 ? static_cast<std::size_t>(groups) : 0);
      for (std::int64_t t = begin; t < end; ++t) {
        const bf16* token = src + t * h;
        const void* row = token;
        if (fp8) {
          for (std::int64_t c = 0; c < h; ++c) values[c] = bf16_to_float(token[c]);
          quantize_row_fp8(values.data(), h, codes.data(), scales.data());
          row = codes.data();
        }
        for (std::int64_t j = 0; j < k; ++j) {
          const int dest = sent.dest_rank.data<int>()[t * k + j];
          if (dest < 0) continue;
          const std::int64_t dst = sent.dest_row.data<int>()[t * k + j];
          Permuted& layout = out.received[static_cast<std::size_t>(dest)].layout;
          std::memcpy(static_cast<std::byte*>(layout.tokens.view().data()) + dst * row_bytes, row,
                      row_bytes);
          if (fp8) {
            // MN-major (core/scale_layout.h): groups of M_max rows (masked) or all rows.
            const ActScaleLayout at{layout.layout == Layout::kMasked ? layout.m_max : layout.m_sum,
                                    groups};
            for (std::int64_t g = 0; g < groups; ++g) {
              layout.scales.data<float>()[at.index(dst, g)] = scales[g];
            }
          }
        }
      }
    });
  }
  return out;
}

}  // namespace moerun::cpu
