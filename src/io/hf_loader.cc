#include "io/hf_loader.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

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

bool wanted(const std::vector<bool>& experts, int e) {
  return experts.empty() || experts[static_cast<std::size_t>(e)];
}

// Carries out one tensor's plan on the host: a view of the mapping when the file allows, else a
// copy of the wanted experts' pieces (the others stay zero).
LoadedTensor place(const TensorPlan& plan, const std::vector<bool>& experts, LoadedMoeLayer& out) {
  LoadedTensor t;
  if (!plan.defined()) return t;
  LoadStats& stats = out.stats;
  if (const std::optional<TensorView> v = plan.mapped_view()) {
    t.view = *v;
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
                           if (wanted(experts, p.expert)) copy_piece(plan, p, base + p.dest_offset);
                         }
                       });
  stats.copied_bytes += copied;
  stats.converted_bytes += converted;
  out.notes.push_back(std::string(plan.name) + ": " +
                      (converted > 0 ? megabytes(converted) + " converted to bf16"
                                     : megabytes(copied) + " copied"));
  return t;
}

LoadedExperts place_all(const ExpertsPlan& plan, const std::vector<bool>& experts,
                        LoadedMoeLayer& out) {
  return {place(plan.w13, experts, out), place(plan.w13_scale, experts, out),
          place(plan.w2, experts, out), place(plan.w2_scale, experts, out)};
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
  out.router_weight =
      widen_to_f32(plan.router, {config.num_experts, config.hidden_size}, out.stats);
  if (plan.router_bias.file) {
    out.correction_bias = widen_to_f32(plan.router_bias, {config.num_experts}, out.stats);
  }
  out.routed = place_all(plan.routed, options.experts, out);
  out.shared_config = plan.shared_config;
  if (out.has_shared()) {
    out.shared = place_all(plan.shared, {}, out);
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
