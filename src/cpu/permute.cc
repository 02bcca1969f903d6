#include "cpu/permute.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/parallel.h"
#include "core/scale_layout.h"
#include "cpu/quant.h"
#include "moerun/errors.h"

namespace moerun::cpu {

std::int64_t masked_m_max(std::int64_t tokens, std::int64_t alignment) {
  return std::max<std::int64_t>(1, (tokens + alignment - 1) / alignment) * alignment;
}

namespace {

// Pre-quantized tokens: fp8 codes and their 1x128 scales, checked as the bf16 path never needs to
// be (a NaN code or a zero, negative or non-finite scale would silently poison the output).
void check_prequantized(const HiddenStates& hidden, std::int64_t tokens, std::int64_t hidden_size) {
  check_tensor(hidden.data, "hidden_states", DType::kFP8E4M3, {tokens, hidden_size},
               DeviceType::kCpu);
  const std::int64_t groups = hidden_size / kQuantGroup;
  check_tensor(hidden.scale, "hidden_states scale", DType::kF32, {tokens, groups},
               DeviceType::kCpu);
  const float* scales = hidden.scale.data_as<const float>();
  for (std::int64_t i = 0; i < tokens * groups; ++i) {
    check_arg(std::isfinite(scales[i]) && scales[i] > 0.0f,
              "hidden_states scale[" + std::to_string(i / groups) + ", " +
                  std::to_string(i % groups) + "]",
              "finite and > 0", scales[i]);
  }
  const auto* codes = hidden.data.data_as<const fp8e4m3>();
  for (std::int64_t i = 0; i < tokens * hidden_size; ++i) {
    check_arg((codes[i].bits & 0x7f) != 0x7f,
              "hidden_states[" + std::to_string(i / hidden_size) + ", " +
                  std::to_string(i % hidden_size) + "]",
              "a finite e4m3 code", "NaN");
  }
}

}  // namespace

Permuted permute(const HiddenStates& hidden, const TensorView& local_ids, int num_local_experts,
                 int num_experts, DType weight_dtype, const PermuteOptions& options) {
  check_arg(hidden.data.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.data.ndim());
  const std::int64_t tokens = hidden.data.size(0), hidden_size = hidden.data.size(1);
  const bool prequantized = hidden.prequantized();
  if (!prequantized) {
    check_tensor(hidden.data, "hidden_states", DType::kBF16, {tokens, hidden_size},
                 DeviceType::kCpu);
  }
  check_arg(local_ids.ndim() == 2, "local_ids rank", "2 ([T, k])", local_ids.ndim());
  const std::int64_t k = local_ids.size(1);
  check_tensor(local_ids, "local_ids", DType::kI32, {tokens, k}, DeviceType::kCpu);
  check_arg(options.alignment == 64 || options.alignment == 128, "alignment", "64 or 128",
            options.alignment);
  const bool fp8 = weight_dtype == DType::kFP8E4M3;
  check_arg(fp8 || weight_dtype == DType::kBF16, "weight_dtype", "bf16 or fp8_e4m3",
            dtype_name(weight_dtype));
  if (fp8) {
    check_arg(hidden_size % kQuantGroup == 0, "hidden_size", "a multiple of 128 for FP8 weights",
              hidden_size);
  }
  if (prequantized) {
    check_arg(fp8, "hidden_states dtype", "bf16 (pre-quantized FP8 input needs FP8 weights)",
              dtype_name(hidden.data.dtype()));
    check_prequantized(hidden, tokens, hidden_size);
  }

  Permuted out;
  out.layout = options.layout;
  out.expected_m = (tokens * k + num_experts - 1) / num_experts;
  out.masked_m = HostTensor(DType::kI32, {num_local_experts});
  out.src2dst = HostTensor(DType::kI32, {tokens, k});
  int* counts = out.masked_m.data<int>();
  std::fill(counts, counts + num_local_experts, 0);

  // Slot assignment in token order, so that the layout (and every result) is deterministic.
  const int* ids = local_ids.data_as<const int>();
  std::vector<int> position(static_cast<std::size_t>(tokens * k), -1);
  for (std::int64_t i = 0; i < tokens * k; ++i) {
    const int e = ids[i];
    check_arg(e >= -1 && e < num_local_experts,
              "local_ids[" + std::to_string(i / k) + ", " + std::to_string(i % k) + "]",
              "a local expert id in [-1, " + std::to_string(num_local_experts) + ")", e);
    if (e >= 0) position[i] = counts[e]++;
  }

  std::vector<std::int64_t> first_row(static_cast<std::size_t>(num_local_experts));
  if (options.layout == Layout::kMasked) {
    out.m_max = options.m_max > 0 ? options.m_max : masked_m_max(tokens, options.alignment);
    check_arg(out.m_max % options.alignment == 0, "m_max",
              "a multiple of " + std::to_string(options.alignment), out.m_max);
    check_arg(out.m_max >= tokens, "m_max", ">= T (" + std::to_string(tokens) + ")", out.m_max);
    for (int e = 0; e < num_local_experts; ++e) first_row[e] = e * out.m_max;
  } else {
    std::int64_t row = 0;
    for (int e = 0; e < num_local_experts; ++e) {
      first_row[e] = row;
      row += (counts[e] + options.alignment - 1) / options.alignment * options.alignment;
    }
    out.m_sum = row;
    out.m_indices = HostTensor(DType::kI32, {out.m_sum});
    int* m_indices = out.m_indices.data<int>();
    std::fill(m_indices, m_indices + out.m_sum, -1);
    for (int e = 0; e < num_local_experts; ++e) {
      std::fill(m_indices + first_row[e], m_indices + first_row[e] + counts[e], e);
    }
  }

  const std::int64_t rows = out.rows();
  const std::int64_t groups = hidden_size / kQuantGroup;
  const DType act_dtype = fp8 ? DType::kFP8E4M3 : DType::kBF16;
  if (options.layout == Layout::kMasked) {
    out.tokens = HostTensor(act_dtype, {num_local_experts, out.m_max, hidden_size});
    if (fp8) out.scales = HostTensor(DType::kF32, {num_local_experts, groups, out.m_max});
  } else {
    out.tokens = HostTensor(act_dtype, {rows, hidden_size});
    if (fp8) out.scales = HostTensor(DType::kF32, {groups, rows});
  }

  const ActScaleLayout scale_layout{options.layout == Layout::kMasked ? out.m_max : rows, groups};
  int* src2dst = out.src2dst.data<int>();
  for (std::int64_t i = 0; i < tokens * k; ++i) {
    src2dst[i] = ids[i] >= 0 ? static_cast<int>(first_row[ids[i]] + position[i]) : -1;
  }

  // Each token is quantized once (unless the caller did) and copied to each of its (up to k) rows.
  const std::size_t row_bytes = static_cast<std::size_t>(hidden_size) * dtype_size(act_dtype);
  const std::size_t in_row_bytes =
      static_cast<std::size_t>(hidden_size) * dtype_size(hidden.data.dtype());
  const auto* src = static_cast<const std::byte*>(hidden.data.data());
  const bool quantize = fp8 && !prequantized;
  detail::parallel_for(tokens, 16, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> values(quantize ? static_cast<std::size_t>(hidden_size) : 0);
    std::vector<fp8e4m3> codes(values.size());
    std::vector<float> quantized_scales(quantize ? static_cast<std::size_t>(groups) : 0);
    for (std::int64_t t = begin; t < end; ++t) {
      const void* row = src + static_cast<std::size_t>(t) * in_row_bytes;
      const float* scales =
          prequantized ? hidden.scale.data_as<const float>() + t * groups : quantized_scales.data();
      if (quantize) {
        const bf16* token = static_cast<const bf16*>(row);
        for (std::int64_t c = 0; c < hidden_size; ++c) values[c] = bf16_to_float(token[c]);
        quantize_row_fp8(values.data(), hidden_size, codes.data(), quantized_scales.data());
        row = codes.data();
      }
      for (std::int64_t j = 0; j < k; ++j) {
        const int dst = src2dst[t * k + j];
        if (dst < 0) continue;
        std::memcpy(static_cast<std::byte*>(out.tokens.view().data()) + dst * row_bytes, row,
                    row_bytes);
        if (fp8) {
          for (std::int64_t g = 0; g < groups; ++g) {
            out.scales.data<float>()[scale_layout.index(dst, g)] = scales[g];
          }
        }
      }
    }
  });
  return out;
}

}  // namespace moerun::cpu
