#include "io/hf_loader.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/checks.h"
#include "core/metrics.h"
#include "core/parallel.h"
#include "cpu/quant.h"
#include "io/convert.h"
#include "io/load_plan.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

std::string megabytes(std::uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MB", static_cast<double>(bytes) * 1e-6);
  return text;
}

// Copies (same dtype) or converts (to bf16) the piece's elements into `dst`.
void copy_piece(const TensorPlan& plan, const PlanPiece& p, std::byte* dst) {
  const std::span<const std::byte> bytes = p.bytes();
  if (plan.as_stored(p)) {
    std::memcpy(dst, bytes.data(), bytes.size());
    return;
  }
  // inspect_moe_layer admitted only BF16/F16/F32 experts here (FP8 and scales are as stored).
  convert_to_bf16(bytes.data(), p.source_dtype(), p.count, reinterpret_cast<bf16*>(dst));
}

// "[3, 5]": a flat index of a file tensor's shape (any rank).
std::string file_index_text(const std::vector<std::int64_t>& shape, std::int64_t flat) {
  std::vector<std::int64_t> index(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    const std::int64_t extent = std::max<std::int64_t>(1, shape[d]);
    index[d] = d == 0 ? flat : flat % extent;
    flat /= extent;
  }
  std::string text = "[";
  for (std::size_t d = 0; d < index.size(); ++d) text += (d ? ", " : "") + std::to_string(index[d]);
  return text + "]";
}

// Rejects the first bad value of `loaded` (`count` elements of `dtype`: what the file tensor
// `source` holds from element `first` on, in the layer's dtype), naming the file, the tensor and
// the element. Runs on the calling thread (inside the loader's parallel loops).
void check_loaded(const StoredTensor& source, std::int64_t first, const std::byte* loaded,
                  DType dtype, std::int64_t count, bool scale) {
  const TensorView view(const_cast<std::byte*>(loaded), dtype, {count});
  const std::optional<std::int64_t> bad =
      scale ? detail::first_bad_scale(view, false) : detail::first_non_finite(view, false);
  if (!bad) return;
  const bool converted = to_moerun_dtype(source.info->dtype) != dtype;
  throw InvalidArgument(
      "element " + file_index_text(source.info->shape, first + *bad) + " of " + source.where(),
      scale ? detail::kPositiveScale : detail::kFiniteValue,
      detail::value_text(view, *bad) +
          (converted ? " (after conversion from " + std::string(st_dtype_name(source.info->dtype)) +
                           " to " + std::string(dtype_name(dtype)) + ")"
                     : std::string()));
}

// The piece's elements as loaded at `loaded` (the destination's bytes), checked.
void check_piece(const TensorPlan& plan, const PlanPiece& p, const std::byte* loaded) {
  const std::string name = plan.name;
  const bool scale = name.size() >= 6 && name.compare(name.size() - 6, 6, "_scale") == 0;
  const auto first = static_cast<std::int64_t>(p.source_offset / st_dtype_size(p.source_dtype()));
  check_loaded(p.source, first, loaded, plan.dtype, p.count, scale);
}

bool wanted(const std::vector<bool>& experts, int e) {
  return experts.empty() || experts[static_cast<std::size_t>(e)];
}

// Carries out one tensor's plan on the host: a view of the mapping when the file allows, else a
// copy of the wanted experts' pieces (the others stay zero). With `check`, every element of the
// wanted experts is checked (check_piece), right after it is copied.
LoadedTensor place(const TensorPlan& plan, const std::vector<bool>& experts, bool check,
                   LoadedMoeLayer& out) {
  LoadedTensor t;
  if (!plan.defined()) return t;
  LoadStats& stats = out.stats;
  if (const std::optional<TensorView> v = plan.mapped_view()) {
    t.view = *v;
    if (check) {
      // The wanted experts only: the others are never read, and reading them would fault them in.
      const auto* mapped = static_cast<const std::byte*>(v->data());
      detail::parallel_for(static_cast<std::int64_t>(plan.pieces.size()), 1,
                           [&](std::int64_t begin, std::int64_t end) {
                             for (std::int64_t i = begin; i < end; ++i) {
                               const PlanPiece& p = plan.pieces[static_cast<std::size_t>(i)];
                               if (wanted(experts, p.expert)) {
                                 check_piece(plan, p, mapped + p.dest_offset);
                               }
                             }
                           });
    }
    out.mapped.push_back(plan.pieces.front().source.file);
    stats.mapped_bytes += plan.nbytes();
    out.notes.push_back(std::string(plan.name) + ": zero-copy view of " +
                        plan.pieces.front().source.file->path());
    return t;
  }
  const bool all = std::all_of(experts.begin(), experts.end(), [](bool b) { return b; });
  t.storage = all ? HostTensor(plan.dtype, plan.shape) : HostTensor::zeros(plan.dtype, plan.shape);
  t.view = t.storage.view();
  auto* base = static_cast<std::byte*>(t.view.data());
  std::uint64_t copied = 0, converted = 0;
  for (const PlanPiece& p : plan.pieces) {
    if (!wanted(experts, p.expert)) continue;
    (plan.as_stored(p) ? copied : converted) += p.bytes().size();
  }
  detail::parallel_for(static_cast<std::int64_t>(plan.pieces.size()), 1,
                       [&](std::int64_t begin, std::int64_t end) {
                         for (std::int64_t i = begin; i < end; ++i) {
                           const PlanPiece& p = plan.pieces[static_cast<std::size_t>(i)];
                           if (!wanted(experts, p.expert)) continue;
                           copy_piece(plan, p, base + p.dest_offset);
                           if (check) check_piece(plan, p, base + p.dest_offset);
                         }
                       });
  stats.copied_bytes += copied;
  stats.converted_bytes += converted;
  out.notes.push_back(std::string(plan.name) + ": " +
                      (converted > 0 ? megabytes(converted) + " converted to bf16"
                                     : megabytes(copied) + " copied"));
  return t;
}

LoadedExperts place_all(const ExpertsPlan& plan, const std::vector<bool>& experts, bool check,
                        LoadedMoeLayer& out) {
  return {place(plan.w13, experts, check, out), place(plan.w13_scale, experts, check, out),
          place(plan.w2, experts, check, out), place(plan.w2_scale, experts, check, out)};
}

// Quantizes `experts` (BF16) to FP8 in place; returns the dequantized-vs-original errors.
QuantizationCheck quantize(LoadedExperts& experts) {
  cpu::BlockQuantized q13 = cpu::quantize_weights_fp8(experts.w13.view);
  cpu::BlockQuantized q2 = cpu::quantize_weights_fp8(experts.w2.view);
  // The reverse check: dequantized weights against the BF16 ones they came from.
  QuantizationCheck check;
  check.w13_error = relative_error(
      cpu::dequantize_weights_fp8(q13.weights.view(), q13.scales.view()).view(), experts.w13.view);
  check.w2_error = relative_error(
      cpu::dequantize_weights_fp8(q2.weights.view(), q2.scales.view()).view(), experts.w2.view);
  auto own = [](HostTensor&& t) {
    LoadedTensor l;
    l.storage = std::move(t);
    l.view = l.storage.view();
    return l;
  };
  experts = {own(std::move(q13.weights)), own(std::move(q13.scales)), own(std::move(q2.weights)),
             own(std::move(q2.scales))};
  return check;
}

void quantize_on_load(LoadedMoeLayer& out) {
  MoeConfig fp8 = out.config;
  fp8.weight_dtype = DType::kFP8E4M3;
  fp8.validate();  // names H or I when they are not multiples of 128
  const QuantizationCheck check = quantize(out.routed);
  if (out.has_shared()) {
    out.shared_config.weight_dtype = DType::kFP8E4M3;
    out.shared_config.validate();
    quantize(out.shared);
  }
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

MoeConfig layer_config(const HfCheckpoint& checkpoint, const LoadOptions& options) {
  MoeConfig c = checkpoint.config().moe_config();
  c.ep_size = options.ep_size;
  c.ep_rank = options.ep_rank;
  c.validate();
  check_arg(options.experts.empty() ||
                options.experts.size() == static_cast<std::size_t>(c.num_local_experts()),
            "experts to load", std::to_string(c.num_local_experts()) + " flags (E_l)",
            options.experts.size());
  return c;
}

HostTensor widen_to_f32(const StoredTensor& source, const Shape& shape, LoadStats& stats) {
  HostTensor out(DType::kF32, shape);
  convert_to_f32(source.bytes().data(), source.info->dtype, source.info->numel(),
                 out.data<float>());
  (source.info->dtype == StDType::kF32 ? stats.copied_bytes : stats.converted_bytes) +=
      source.info->nbytes();
  return out;
}

void check_widened(const StoredTensor& source, const HostTensor& widened) {
  check_loaded(source, 0, static_cast<const std::byte*>(widened.view().data()), DType::kF32,
               widened.numel(), false);
}

LoadedMoeLayer load_moe_layer(const HfCheckpoint& checkpoint, int layer,
                              const LoadOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  LoadedMoeLayer out;
  out.layer = layer;
  out.config = layer_config(checkpoint, options);
  const MoeConfig& config = out.config;
  out.info =
      checkpoint.inspect_moe_layer(layer, config.first_local_expert(), config.num_local_experts());
  // Look every tensor up first (the plan does): the store opens shards lazily and is not
  // thread-safe; the copies below run on all cores.
  const MoeLayerPlan plan = plan_moe_layer(checkpoint, layer, config, options.shared_experts);
  const bool check = options.check_finite;
  out.router_weight =
      widen_to_f32(plan.router, {config.num_experts, config.hidden_size}, out.stats);
  if (check) check_widened(plan.router, out.router_weight);
  if (plan.router_bias.file) {
    out.correction_bias = widen_to_f32(plan.router_bias, {config.num_experts}, out.stats);
    if (check) check_widened(plan.router_bias, out.correction_bias);
  }
  out.routed = place_all(plan.routed, options.experts, check, out);
  out.shared_config = plan.shared_config;
  if (out.has_shared()) {
    out.shared = place_all(plan.shared, {}, check, out);
    out.notes.push_back("shared experts: one dense MLP of intermediate size " +
                        std::to_string(out.shared_config.intermediate_size) +
                        ", computed for every token and added to the routed output");
  }
  const StDType file_dtype = out.info.expert_dtype;
  if (to_moerun_dtype(file_dtype) != config.weight_dtype) {
    out.notes.push_back("experts converted from " + std::string(st_dtype_name(file_dtype)) +
                        " to bf16 (round to nearest even): not zero-copy");
  }
  if (options.quantize_fp8) {
    if (config.is_fp8()) {
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
