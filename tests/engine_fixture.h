// Helpers of the engine-API tests (CPU and CUDA): a rank's experts gathered for an arbitrary
// placement, and hidden states quantized the way a caller (DeepEP's FP8 dispatch) would.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/synthetic.h"
#include "cpu/quant.h"
#include "moerun/expert_map.h"
#include "moerun/host_tensor.h"

namespace moerun::test {

// Copies of the experts `global_ids` (in that order, local expert l = global_ids[l]) of `all`.
inline HostTensor gather_dim0(const TensorView& all, std::span<const std::int32_t> global_ids) {
  if (!all.defined()) return {};
  const std::size_t per_expert = all.nbytes() / static_cast<std::size_t>(all.size(0));
  HostTensor out(all.dtype(),
                 {static_cast<std::int64_t>(global_ids.size()), all.size(1), all.size(2)});
  for (std::size_t l = 0; l < global_ids.size(); ++l) {
    std::memcpy(static_cast<std::byte*>(out.view().data()) + l * per_expert,
                static_cast<const std::byte*>(all.data()) + global_ids[l] * per_expert, per_expert);
  }
  return out;
}

// The weights a rank holds under `expert_map`: its local experts, in local-id order.
inline HostMoeWeights rank_weights(const MoeWeights& all,
                                   std::span<const std::int32_t> expert_map) {
  const std::vector<std::int32_t> globals = local_to_global(expert_map);
  HostMoeWeights w;
  w.w13 = gather_dim0(all.w13, globals);
  w.w13_scale = gather_dim0(all.w13_scale, globals);
  w.w2 = gather_dim0(all.w2, globals);
  w.w2_scale = gather_dim0(all.w2_scale, globals);
  if (all.correction_bias.defined()) {
    w.correction_bias = HostTensor(DType::kF32, all.correction_bias.shape());
    std::memcpy(w.correction_bias.view().data(), all.correction_bias.data(),
                all.correction_bias.nbytes());
  }
  return w;
}

struct QuantizedHidden {
  HostTensor codes;   // [T, H] fp8_e4m3
  HostTensor scales;  // [T, H / 128] f32
};

// hidden [T, H] bf16 -> 1x128 FP8, with moerun's own recipe (cpu/quant.h).
inline QuantizedHidden quantize_hidden(const HostTensor& hidden) {
  const std::int64_t tokens = hidden.size(0), h = hidden.size(1);
  QuantizedHidden q{HostTensor(DType::kFP8E4M3, {tokens, h}),
                    HostTensor(DType::kF32, {tokens, h / kQuantGroup})};
  std::vector<float> row(static_cast<std::size_t>(h));
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t c = 0; c < h; ++c) row[c] = bf16_to_float(hidden.data<bf16>()[t * h + c]);
    cpu::quantize_row_fp8(row.data(), h, q.codes.data<fp8e4m3>() + t * h,
                          q.scales.data<float>() + t * (h / kQuantGroup));
  }
  return q;
}

}  // namespace moerun::test
