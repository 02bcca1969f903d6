#include "cpu/stage_reference.h"

#include <vector>

#include "core/portable_math.h"
#include "cpu/gemm.h"
#include "cpu/quant.h"

namespace moerun::test {

namespace {

// One row as a GEMM operand: bf16 values, or FP8 codes and their 1x128 scales.
struct Row {
  HostTensor data, scale;

  Row(const std::vector<float>& values, bool fp8) {
    const auto cols = static_cast<std::int64_t>(values.size());
    if (fp8) {
      data = HostTensor(DType::kFP8E4M3, {1, cols});
      // MN-major (core/scale_layout.h) [K / 128, rows]: for one row, the row's scales in order.
      scale = HostTensor(DType::kF32, {cols / kQuantGroup, 1});
      cpu::quantize_row_fp8(values.data(), cols, data.data<fp8e4m3>(), scale.data<float>());
    } else {
      data = HostTensor(DType::kBF16, {1, cols});
      for (std::int64_t c = 0; c < cols; ++c) data.data<bf16>()[c] = float_to_bf16(values[c]);
    }
  }
};

// row x w[expert]^T -> [N] as floats (the GEMM's bf16 outputs, widened exactly).
std::vector<float> product(const Row& row, const TensorView& w, const TensorView& w_scale,
                           int expert) {
  const std::int64_t n = w.size(1);
  HostTensor m_indices(DType::kI32, {1});
  m_indices.data<int>()[0] = expert;
  HostTensor out(DType::kBF16, {1, n});
  cpu::grouped_gemm_contiguous({row.data.view(), row.scale.view()}, {w, w_scale}, m_indices.view(),
                               out.view());
  std::vector<float> values(static_cast<std::size_t>(n));
  for (std::int64_t c = 0; c < n; ++c) values[c] = bf16_to_float(out.data<bf16>()[c]);
  return values;
}

}  // namespace

HostTensor stage_reference(const MoeConfig& config, const MoeWeights& local_weights,
                           const TensorView& hidden, const TensorView& topk_ids,
                           const TensorView& topk_weights, DType out_dtype) {
  const std::int64_t tokens = hidden.size(0), h = config.hidden_size,
                     inter = config.intermediate_size;
  const int k = config.top_k();
  const int first = config.first_local_expert(), local = config.num_local_experts();
  const bool fp8 = config.is_fp8();  // the activations follow the weights
  HostTensor out(out_dtype, {tokens, h});
  std::vector<float> x(static_cast<std::size_t>(h)), act(static_cast<std::size_t>(inter));
  std::vector<float> sum(static_cast<std::size_t>(h));
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t c = 0; c < h; ++c)
      x[c] = bf16_to_float(hidden.data_as<const bf16>()[t * h + c]);
    const Row token(x, fp8);
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (int j = 0; j < k; ++j) {
      const int id = topk_ids.data_as<const int>()[t * k + j];
      if (id < first || id >= first + local) continue;  // -1, or another rank's expert
      const int e = id - first;
      const std::vector<float> gate_up =
          product(token, local_weights.w13, local_weights.w13_scale, e);
      for (std::int64_t c = 0; c < inter; ++c) {
        act[c] = detail::silu_f32(gate_up[c]) * gate_up[inter + c];
      }
      const std::vector<float> down =
          product(Row(act, fp8), local_weights.w2, local_weights.w2_scale, e);
      const float w = topk_weights.data_as<const float>()[t * k + j];
      for (std::int64_t c = 0; c < h; ++c) sum[c] += w * down[c];
    }
    for (std::int64_t c = 0; c < h; ++c) {
      if (out_dtype == DType::kF32) {
        out.data<float>()[t * h + c] = sum[c];
      } else {
        out.data<bf16>()[t * h + c] = float_to_bf16(sum[c]);
      }
    }
  }
  return out;
}

}  // namespace moerun::test
