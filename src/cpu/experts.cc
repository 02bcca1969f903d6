#include "cpu/experts.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "cpu/activation.h"
#include "cpu/gemm.h"
#include "cpu/row_segments.h"
#include "moerun/errors.h"

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

HostTensor run_experts(const MoeConfig& config, const MoeWeights& weights, const Permuted& permuted,
                       bool overlap) {
  const std::int64_t h = config.hidden_size, inter = config.intermediate_size;
  const int local_experts = static_cast<int>(permuted.masked_m.numel());
  check_arg(!overlap || permuted.layout == Layout::kMasked, "overlap",
            "the masked layout (the down GEMM reports per masked row block)",
            layout_name(permuted.layout));
  const bool masked = permuted.layout == Layout::kMasked;
  const std::vector<RowSegment> segments =
      masked ? masked_segments(permuted.masked_m.view(), permuted.m_max)
             : contiguous_segments(permuted.m_indices.view(), local_experts);
  const std::int64_t rows = permuted.rows();
  // A contiguous layout with no row (no token here) has nothing to compute.
  if (rows == 0) return HostTensor(DType::kBF16, {0, h});
  const DType act_dtype = config.weight_dtype;

  HostTensor gate_up(DType::kBF16, {rows, 2 * inter});
  const GemmOperand a1{permuted.tokens.view(), permuted.scales.view()};
  const GemmOperand w13{weights.w13, weights.w13_scale};
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
  const GemmOperand w2{weights.w2, weights.w2_scale};
  if (masked) {
    const TensorView act3d(act.view().data(), act_dtype, {local_experts, permuted.m_max, inter});
    const TensorView scale3d = act_scale.view();
    const TensorView down3d(down.view().data(), DType::kBF16, {local_experts, permuted.m_max, h});
    if (overlap) {
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
  return down;
}

}  // namespace moerun::cpu
