#include "io/hf_loader.h"

#include <chrono>
#include <cstring>

#include "core/checks.h"
#include "core/metrics.h"
#include "core/parallel.h"
#include "cpu/quant.h"
#include "io/convert.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

std::string megabytes(std::uint64_t bytes) {
  return std::to_string((bytes + 500'000) / 1'000'000) + " MB";
}

// The experts' tensors as one [count, ...] view of the mapping, when they lie back to back in one
// file in `dtype`, aligned; nullopt otherwise.
std::optional<TensorView> contiguous_view(const std::vector<StoredTensor>& parts, DType dtype,
                                          const Shape& shape) {
  if (parts.empty()) return std::nullopt;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].file != parts[0].file || to_moerun_dtype(parts[i].info->dtype) != dtype) {
      return std::nullopt;
    }
    if (i > 0 && parts[i].info->begin != parts[i - 1].info->end) return std::nullopt;
  }
  const std::optional<TensorView> first = parts[0].file->view(*parts[0].info);
  if (!first) return std::nullopt;
  return TensorView(first->data(), dtype, shape);
}

// Copies (same dtype) or converts (to bf16) `src` into `dst`, which holds src's element count.
void copy_into(const StoredTensor& src, DType dst_dtype, std::byte* dst) {
  const std::span<const std::byte> bytes = src.bytes();
  if (to_moerun_dtype(src.info->dtype) == dst_dtype) {
    std::memcpy(dst, bytes.data(), bytes.size());
    return;
  }
  // inspect_moe_layer admitted only BF16/F16/F32 here (FP8 is always stored as is).
  convert_to_bf16(bytes.data(), src.info->dtype, src.info->numel(), reinterpret_cast<bf16*>(dst));
}

// Rejects the first bad value of `loaded` (what `src` became in the layer's dtype, its shape),
// naming the file, the tensor and the element.
void check_loaded(const StoredTensor& src, const TensorView& loaded, bool scale) {
  const std::optional<std::int64_t> bad =
      // Called inside the loader's parallel loop over experts: on this thread.
      scale ? detail::first_bad_scale(loaded, false) : detail::first_non_finite(loaded, false);
  if (!bad) return;
  const bool converted = to_moerun_dtype(src.info->dtype) != loaded.dtype();
  throw InvalidArgument(
      "element " + detail::index_text(loaded.shape(), *bad) + " of " + src.where(),
      scale ? detail::kPositiveScale : detail::kFiniteValue,
      detail::value_text(loaded, *bad) +
          (converted ? " (after conversion from " + std::string(st_dtype_name(src.info->dtype)) +
                           " to " + std::string(dtype_name(loaded.dtype())) + ")"
                     : std::string()));
}

// The rows [row, row + rows) of expert `expert` of a [E_l, R, C] tensor, as [rows, C].
TensorView expert_rows(const TensorView& t, std::int64_t expert, std::int64_t row,
                       std::int64_t rows) {
  const std::int64_t all_rows = t.size(1), cols = t.size(2);
  auto* base = static_cast<std::byte*>(t.data());
  return TensorView(
      base + static_cast<std::size_t>((expert * all_rows + row) * cols) * dtype_size(t.dtype()),
      t.dtype(), {rows, cols});
}

void count_bytes(const StoredTensor& src, DType dst_dtype, LoadStats& stats) {
  if (to_moerun_dtype(src.info->dtype) == dst_dtype) {
    stats.copied_bytes += src.info->nbytes();
  } else {
    stats.converted_bytes += src.info->nbytes();
  }
}

HostTensor widen_to_f32(const StoredTensor& src, const Shape& shape, LoadStats& stats) {
  HostTensor out(DType::kF32, shape);
  convert_to_f32(src.bytes().data(), src.info->dtype, src.info->numel(), out.data<float>());
  count_bytes(src, DType::kF32, stats);
  return out;
}

std::byte* expert_slot(const HostTensor& t, std::int64_t expert, std::int64_t row) {
  const std::int64_t rows = t.size(1), cols = t.size(2);
  return reinterpret_cast<std::byte*>(t.view().data()) +
         static_cast<std::size_t>((expert * rows + row) * cols) * dtype_size(t.dtype());
}

void quantize_on_load(LoadedMoeLayer& out) {
  MoeConfig fp8 = out.config;
  fp8.weight_dtype = DType::kFP8E4M3;
  fp8.validate();  // names H or I when they are not multiples of 128
  cpu::BlockQuantized q13 = cpu::quantize_weights_fp8(out.w13.view());
  cpu::BlockQuantized q2 = cpu::quantize_weights_fp8(out.w2);
  // The reverse check: dequantized weights against the BF16 ones they came from.
  QuantizationCheck check;
  check.w13_error = relative_error(
      cpu::dequantize_weights_fp8(q13.weights.view(), q13.scales.view()).view(), out.w13.view());
  check.w2_error = relative_error(
      cpu::dequantize_weights_fp8(q2.weights.view(), q2.scales.view()).view(), out.w2);
  out.w13 = std::move(q13.weights);
  out.w13_scale = std::move(q13.scales);
  out.w2_storage = std::move(q2.weights);
  out.w2_scale_storage = std::move(q2.scales);
  out.w2 = out.w2_storage.view();
  out.w2_scale = out.w2_scale_storage.view();
  out.config = fp8;
  out.quantization = check;
  char line[160];
  std::snprintf(line, sizeof(line),
                "experts quantized on load to FP8 e4m3, 128x128 block scales; dequantized vs "
                "original: w13 %.2e, w2 %.2e relative error",
                check.w13_error, check.w2_error);
  out.notes.emplace_back(line);
}

}  // namespace

MoeWeights LoadedMoeLayer::weights() const {
  return {w13.view(), w13_scale.view(), w2, w2_scale, correction_bias.view()};
}

LoadedMoeLayer load_moe_layer(const HfCheckpoint& checkpoint, int layer,
                              const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const HfConfig& hc = checkpoint.config();
  LoadedMoeLayer out;
  out.layer = layer;
  out.config = hc.moe_config();
  out.config.ep_size = options.ep_size;
  out.config.ep_rank = options.ep_rank;
  out.config.validate();
  const MoeConfig& config = out.config;
  const int first = config.first_local_expert(), count = config.num_local_experts();
  out.info = checkpoint.inspect_moe_layer(layer, first, count);

  const MoeLayerNames names = checkpoint.names(layer);
  const TensorStore& store = checkpoint.store();
  const std::int64_t h = config.hidden_size, inter = config.intermediate_size;
  LoadStats& stats = out.stats;

  out.router_weight = widen_to_f32(store.at(names.router), {config.num_experts, h}, stats);
  if (options.check_finite) check_loaded(store.at(names.router), out.router_weight.view(), false);
  if (!names.router_bias.empty()) {
    out.correction_bias = widen_to_f32(store.at(names.router_bias), {config.num_experts}, stats);
    if (options.check_finite) {
      check_loaded(store.at(names.router_bias), out.correction_bias.view(), false);
    }
  }

  // Look every tensor up first: the store opens shards lazily and is not thread-safe.
  const bool fp8 = config.is_fp8();
  const DType dtype = config.weight_dtype;
  std::vector<StoredTensor> gate, up, down, gate_scale, up_scale, down_scale;
  for (int e = first; e < first + count; ++e) {
    gate.push_back(store.at(names.gate(e)));
    up.push_back(store.at(names.up(e)));
    down.push_back(store.at(names.down(e)));
    if (fp8) {
      gate_scale.push_back(store.at(scale_name(names.gate(e))));
      up_scale.push_back(store.at(scale_name(names.up(e))));
      down_scale.push_back(store.at(scale_name(names.down(e))));
    }
  }

  out.w13 = HostTensor(dtype, {count, 2 * inter, h});
  if (fp8)
    out.w13_scale = HostTensor(DType::kF32, {count, 2 * inter / kQuantGroup, h / kQuantGroup});
  // w2 and w2_scale: in place when the file allows it, else a copy.
  auto place = [&](const std::vector<StoredTensor>& parts, DType d, const Shape& shape,
                   TensorView& view, HostTensor& storage, const char* what) {
    if (const std::optional<TensorView> v = contiguous_view(parts, d, shape)) {
      view = *v;
      out.mapped.push_back(parts.front().file);
      for (const auto& p : parts) stats.mapped_bytes += p.info->nbytes();
      out.notes.push_back(std::string(what) + ": zero-copy view of " + parts.front().file->path());
      return false;
    }
    storage = HostTensor(d, shape);
    view = storage.view();
    for (const auto& p : parts) count_bytes(p, d, stats);
    return true;
  };
  const bool copy_w2 = place(down, dtype, {count, h, inter}, out.w2, out.w2_storage, "w2");
  const bool copy_w2_scale =
      fp8 && place(down_scale, DType::kF32, {count, h / kQuantGroup, inter / kQuantGroup},
                   out.w2_scale, out.w2_scale_storage, "w2_scale");
  for (int e = 0; e < count; ++e) {
    count_bytes(gate[e], dtype, stats);
    count_bytes(up[e], dtype, stats);
    if (fp8) {
      stats.copied_bytes += gate_scale[e].info->nbytes() + up_scale[e].info->nbytes();
    }
  }

  // Each expert's values are checked right after they are copied, while they are in cache.
  const bool check = options.check_finite;
  const std::int64_t inter_blocks = inter / kQuantGroup, h_blocks = h / kQuantGroup;
  detail::parallel_for(count, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t e = begin; e < end; ++e) {
      copy_into(gate[e], dtype, expert_slot(out.w13, e, 0));
      copy_into(up[e], dtype, expert_slot(out.w13, e, inter));
      if (copy_w2) copy_into(down[e], dtype, expert_slot(out.w2_storage, e, 0));
      if (check) {
        check_loaded(gate[e], expert_rows(out.w13.view(), e, 0, inter), false);
        check_loaded(up[e], expert_rows(out.w13.view(), e, inter, inter), false);
        check_loaded(down[e], expert_rows(out.w2, e, 0, h), false);
      }
      if (!fp8) continue;
      copy_into(gate_scale[e], DType::kF32, expert_slot(out.w13_scale, e, 0));
      copy_into(up_scale[e], DType::kF32, expert_slot(out.w13_scale, e, inter / kQuantGroup));
      if (copy_w2_scale)
        copy_into(down_scale[e], DType::kF32, expert_slot(out.w2_scale_storage, e, 0));
      if (check) {
        check_loaded(gate_scale[e], expert_rows(out.w13_scale.view(), e, 0, inter_blocks), true);
        check_loaded(up_scale[e], expert_rows(out.w13_scale.view(), e, inter_blocks, inter_blocks),
                     true);
        check_loaded(down_scale[e], expert_rows(out.w2_scale, e, 0, h_blocks), true);
      }
    }
  });

  const StDType file_dtype = out.info.expert_dtype;
  if (to_moerun_dtype(file_dtype) != dtype) {
    out.notes.push_back("experts converted from " + std::string(st_dtype_name(file_dtype)) +
                        " to bf16 (round to nearest even): not zero-copy");
  }
  out.notes.push_back("w13: gate and up packed into one tensor (" +
                      megabytes(out.w13.nbytes() + out.w13_scale.nbytes()) + " copied)");
  if (copy_w2) {
    out.notes.push_back("w2: copied (the down projections are not back to back in one file)");
  }
  if (options.quantize_fp8) {
    if (fp8) {
      out.notes.emplace_back("experts are FP8 already: nothing to quantize");
    } else {
      quantize_on_load(out);
    }
  }
  out.stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace moerun::io
