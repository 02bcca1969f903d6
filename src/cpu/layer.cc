#include "cpu/layer.h"

#include <algorithm>
#include <optional>
#include <span>
#include <string>

#include "core/checks.h"
#include "cpu/activation.h"
#include "cpu/combine.h"
#include "cpu/dispatch.h"
#include "cpu/ep_reduce.h"
#include "cpu/gemm.h"
#include "cpu/permute.h"
#include "cpu/row_segments.h"
#include "moerun/errors.h"
#include "moerun/expert_map.h"

namespace moerun::cpu {

namespace {

// The combine side of single-batch overlap: every row block it reads must be final.
void check_overlap_complete(const HostTensor& counters, const OverlapReport& report,
                            const Permuted& permuted) {
  const std::int64_t m_blocks = (permuted.m_max + report.block_m - 1) / report.block_m;
  const int* masked_m = permuted.masked_m.data<int>();
  for (std::int64_t e = 0; e < permuted.masked_m.numel(); ++e) {
    for (std::int64_t b = 0; b < (masked_m[e] + report.block_m - 1) / report.block_m; ++b) {
      // The GEMM's threads have joined, which orders their increments before this read.
      const int done = counters.data<int>()[e * m_blocks + b];
      if (done != report.threshold) {
        throw Error("overlap counter of expert " + std::to_string(e) + " row block " +
                    std::to_string(b) + " is " + std::to_string(done) + ", expected " +
                    std::to_string(report.threshold));
      }
    }
  }
}

}  // namespace

void moe_forward(const MoeConfig& config, const MoeWeights& local_weights,
                 const HiddenStates& hidden, const TensorView& topk_ids,
                 const TensorView& topk_weights, const TensorView& out,
                 const ForwardOptions& options) {
  config.validate();
  const int local_experts = config.num_local_experts();
  local_weights.validate(config, local_experts, Device{});
  check_arg(hidden.data.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.data.ndim());
  const std::int64_t tokens = hidden.data.size(0);
  const std::int64_t h = config.hidden_size, inter = config.intermediate_size;
  const DType hidden_dtype = hidden.prequantized() ? DType::kFP8E4M3 : DType::kBF16;
  check_tensor(hidden.data, "hidden_states", hidden_dtype, {tokens, h}, DeviceType::kCpu);
  check_tensor(topk_ids, "topk_ids", DType::kI32, {tokens, config.top_k()}, DeviceType::kCpu);
  detail::check_topk_weights(topk_weights, tokens, config.top_k());
  check_arg(!options.overlap || options.layout == Layout::kMasked, "overlap",
            "the masked layout (the down GEMM reports per masked row block)",
            layout_name(options.layout));

  HostTensor local_ids;
  if (options.ids == ExpertIds::kGlobal && options.expert_map.defined()) {
    check_tensor(options.expert_map, "expert_map", DType::kI32, {config.num_experts},
                 DeviceType::kCpu);
    const std::span<const std::int32_t> map(options.expert_map.data_as<const std::int32_t>(),
                                            static_cast<std::size_t>(config.num_experts));
    const int mapped = validate_expert_map(map, config.num_experts);
    check_arg(mapped == local_experts, "expert_map local experts",
              std::to_string(local_experts) + " (the layer's E_l)", mapped);
    local_ids = map_to_local(topk_ids, map);
  } else if (options.ids == ExpertIds::kGlobal) {
    local_ids = map_to_local(topk_ids, config.local_expert_map());
  } else {
    check_arg(!options.expert_map.defined(), "expert_map", "none with local ids", "a map");
    detail::check_topk_ids(topk_ids, local_experts);  // range [-1, E_l), distinct per token
  }
  const Permuted permuted = permute(
      hidden, options.ids == ExpertIds::kGlobal ? local_ids.view() : topk_ids, local_experts,
      config.num_experts, config.weight_dtype, {options.layout, options.m_max, options.alignment});
  const bool masked = options.layout == Layout::kMasked;
  const std::vector<RowSegment> segments =
      masked ? masked_segments(permuted.masked_m.view(), permuted.m_max)
             : contiguous_segments(permuted.m_indices.view(), local_experts);
  const std::int64_t rows = permuted.rows();
  const DType act_dtype = config.weight_dtype;

  HostTensor gate_up(DType::kBF16, {rows, 2 * inter});
  const GemmOperand a1{permuted.tokens.view(), permuted.scales.view()};
  const GemmOperand w13{local_weights.w13, local_weights.w13_scale};
  const TensorView gate_up_out = masked ? TensorView(gate_up.view().data(), DType::kBF16,
                                                     {local_experts, permuted.m_max, 2 * inter})
                                        : gate_up.view();
  if (masked) {
    grouped_gemm_masked(a1, w13, permuted.masked_m.view(), gate_up_out);
  } else {
    grouped_gemm_contiguous(a1, w13, permuted.m_indices.view(), gate_up_out);
  }

  HostTensor act(act_dtype, {rows, inter});
  // MN-major (core/scale_layout.h): the down GEMM's A scales in its layout's groups of rows.
  HostTensor act_scale;
  if (config.is_fp8()) {
    act_scale = masked
                    ? HostTensor(DType::kF32, {local_experts, inter / kQuantGroup, permuted.m_max})
                    : HostTensor(DType::kF32, {inter / kQuantGroup, rows});
  }
  silu_and_mul(gate_up.view(), segments, act.view(), act_scale.view());

  HostTensor down(DType::kBF16, {rows, h});
  const GemmOperand w2{local_weights.w2, local_weights.w2_scale};
  if (masked) {
    const TensorView act3d(act.view().data(), act_dtype, {local_experts, permuted.m_max, inter});
    const TensorView scale3d = act_scale.view();
    const TensorView down3d(down.view().data(), DType::kBF16, {local_experts, permuted.m_max, h});
    if (options.overlap) {
      constexpr int kBlockM = 64;
      const std::int64_t m_blocks = (permuted.m_max + kBlockM - 1) / kBlockM;
      HostTensor counters(DType::kI32, {local_experts * m_blocks});
      std::fill(counters.data<int>(), counters.data<int>() + counters.numel(), 0);
      const OverlapSignal signal{counters.view(), kBlockM};
      const std::optional<OverlapReport> report =
          grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d, &signal);
      if (!report) throw Error("the down GEMM was asked for an overlap report and gave none");
      check_overlap_complete(counters, *report, permuted);
    } else {
      // No signal, no report: nothing here may expect one (a missing report was once unpacked).
      grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d);
    }
  } else {
    grouped_gemm_contiguous({act.view(), act_scale.view()}, w2, permuted.m_indices.view(),
                            down.view());
  }
  combine(down.view(), permuted.src2dst.view(), topk_weights, out, config.output_scale);
}

void moe_forward_standard_ep(const MoeConfig& config, const MoeWeights& all_weights,
                             const TensorView& hidden, const TensorView& topk_ids,
                             const TensorView& topk_weights, const TensorView& out,
                             const ForwardOptions& options) {
  config.validate();
  check_arg(config.expert_map.empty(), "expert_map",
            "none (the simulated ranks place experts contiguously)", "a map");
  all_weights.validate(config, config.num_experts, Device{});
  const std::int64_t tokens = hidden.size(0), h = config.hidden_size;
  check_tensor(out, "out", DType::kBF16, {tokens, h}, DeviceType::kCpu);
  PartialSum sum(tokens, h);
  HostTensor partial(DType::kF32, {tokens, h});
  for (int rank = 0; rank < config.ep_size; ++rank) {
    MoeConfig rank_config = config;
    rank_config.ep_rank = rank;
    const int local = config.num_local_experts();
    moe_forward(rank_config, all_weights.slice_experts(rank * local, local), hidden, topk_ids,
                topk_weights, partial.view(), options);
    sum.add(partial.view());
  }
  sum.store_bf16(out);
}

}  // namespace moerun::cpu
