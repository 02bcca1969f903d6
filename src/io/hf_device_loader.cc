#include "io/hf_device_loader.h"

#include <chrono>
#include <cstring>

#include "core/parallel.h"
#include "cuda/staged_upload.h"
#include "io/convert.h"
#include "io/load_plan.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

// Fills `staging` with the destination bytes [offset, offset + count) of one plan piece, copied
// or converted from the mapping over all cores.
void stage_piece(const TensorPlan& plan, const PlanPiece& p, std::byte* staging, std::size_t offset,
                 std::size_t count) {
  const std::span<const std::byte> src = p.bytes();
  const std::size_t out_size = dtype_size(plan.dtype);
  const std::size_t in_size = st_dtype_size(p.source_dtype());
  const bool as_stored = plan.as_stored(p);
  const auto elements = static_cast<std::int64_t>(count / out_size);
  detail::parallel_for(elements, 1 << 18, [&](std::int64_t begin, std::int64_t end) {
    const std::size_t first = offset / out_size + static_cast<std::size_t>(begin);
    const auto n = static_cast<std::size_t>(end - begin);
    std::byte* dst = staging + static_cast<std::size_t>(begin) * out_size;
    if (as_stored) {
      std::memcpy(dst, src.data() + first * in_size, n * out_size);
    } else {
      convert_to_bf16(src.data() + first * in_size, p.source_dtype(), static_cast<std::int64_t>(n),
                      reinterpret_cast<bf16*>(dst));
    }
  });
}

// Uploads one tensor's plan into a new device buffer; counts the bytes and reports progress.
cuda::DeviceBuffer upload(const TensorPlan& plan, cuda::StagedUpload& staged, LoadStats& stats,
                          const std::function<void()>& advanced) {
  if (!plan.defined()) return {};
  cuda::DeviceBuffer buffer(plan.dtype, plan.shape);
  auto* base = static_cast<std::byte*>(buffer.view().data());
  for (const PlanPiece& p : plan.pieces) {
    const std::size_t bytes = static_cast<std::size_t>(p.count) * dtype_size(plan.dtype);
    staged.write(base + p.dest_offset, bytes, dtype_size(plan.dtype),
                 [&](std::byte* staging, std::size_t offset, std::size_t count) {
                   stage_piece(plan, p, staging, offset, count);
                 });
    (plan.as_stored(p) ? stats.mapped_bytes : stats.converted_bytes) += p.bytes().size();
    advanced();
  }
  return buffer;
}

DeviceExperts upload_all(const ExpertsPlan& plan, cuda::StagedUpload& staged, LoadStats& stats,
                         const std::function<void()>& advanced) {
  DeviceExperts d;
  d.w13 = upload(plan.w13, staged, stats, advanced);
  d.w13_scale = upload(plan.w13_scale, staged, stats, advanced);
  d.w2 = upload(plan.w2, staged, stats, advanced);
  d.w2_scale = upload(plan.w2_scale, staged, stats, advanced);
  return d;
}

DeviceExperts upload_host(const MoeWeights& host, LoadStats& stats) {
  DeviceExperts d;
  d.w13 = cuda::DeviceBuffer::upload(host.w13);
  d.w13_scale = cuda::DeviceBuffer::upload(host.w13_scale);
  d.w2 = cuda::DeviceBuffer::upload(host.w2);
  d.w2_scale = cuda::DeviceBuffer::upload(host.w2_scale);
  for (const TensorView* t : {&host.w13, &host.w13_scale, &host.w2, &host.w2_scale}) {
    if (t->defined()) stats.uploaded_bytes += t->nbytes();
  }
  return d;
}

// The upload of a layer loaded (and quantized) on the host.
DeviceMoeLayer upload_quantized(const HfCheckpoint& checkpoint, int layer,
                                const LoadOptions& options) {
  const LoadedMoeLayer host = load_moe_layer(checkpoint, layer, options);
  DeviceMoeLayer d;
  d.layer = layer;
  d.config = host.config;
  d.info = host.info;
  d.stats = host.stats;
  d.quantization = host.quantization;
  d.notes = host.notes;
  d.notes.emplace_back("uploaded from the host copy (quantized on load)");
  d.router_weight = cuda::DeviceBuffer::upload(host.router_weight.view());
  d.correction_bias = cuda::DeviceBuffer::upload(host.correction_bias.view());
  d.stats.uploaded_bytes += host.router_weight.nbytes() + host.correction_bias.nbytes();
  d.routed = upload_host(host.weights(), d.stats);
  d.shared_config = host.shared_config;
  if (host.has_shared()) d.shared = upload_host(host.shared_weights(), d.stats);
  return d;
}

}  // namespace

DeviceMoeLayer upload_moe_layer(const HfCheckpoint& checkpoint, int layer,
                                const LoadOptions& options, const ProgressFn& progress,
                                std::size_t staging_bytes) {
  const auto start = std::chrono::steady_clock::now();
  check_arg(options.experts.empty(), "experts to load", "all (device loads take every expert)",
            "a subset");
  if (options.quantize_fp8 && !checkpoint.config().fp8_block_scaled) {
    DeviceMoeLayer d = upload_quantized(checkpoint, layer, options);
    d.stats.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return d;
  }
  DeviceMoeLayer d;
  d.layer = layer;
  d.config = layer_config(checkpoint, options);
  d.info = checkpoint.inspect_moe_layer(layer, d.config.first_local_expert(),
                                        d.config.num_local_experts());
  const MoeLayerPlan plan = plan_moe_layer(checkpoint, layer, d.config, options.shared_experts);
  const HostTensor router =
      widen_to_f32(plan.router, {d.config.num_experts, d.config.hidden_size}, d.stats);
  if (options.check_finite) check_widened(plan.router, router);
  d.router_weight = cuda::DeviceBuffer::upload(router.view());
  if (plan.router_bias.file) {
    const HostTensor bias = widen_to_f32(plan.router_bias, {d.config.num_experts}, d.stats);
    if (options.check_finite) check_widened(plan.router_bias, bias);
    d.correction_bias = cuda::DeviceBuffer::upload(bias.view());
  }
  std::size_t pieces = 0, done = 0;
  for (const ExpertsPlan* e : {&plan.routed, &plan.shared}) {
    for (const TensorPlan* t : e->tensors()) pieces += t->pieces.size();
  }
  const std::function<void()> advanced = [&] {
    ++done;
    if (progress) progress(static_cast<double>(done) / static_cast<double>(pieces));
  };
  cuda::StagedUpload staged(staging_bytes);
  d.routed = upload_all(plan.routed, staged, d.stats, advanced);
  d.shared_config = plan.shared_config;
  if (d.has_shared()) d.shared = upload_all(plan.shared, staged, d.stats, advanced);
  staged.finish();
  d.stats.uploaded_bytes += staged.uploaded_bytes() + d.router_weight.view().nbytes() +
                            (d.correction_bias.defined() ? d.correction_bias.view().nbytes() : 0);
  const StDType file_dtype = d.info.expert_dtype;
  if (options.quantize_fp8) d.notes.emplace_back("experts are FP8 already: nothing to quantize");
  d.notes.push_back("experts read from the mapping into pinned staging buffers and uploaded " +
                    std::string(to_moerun_dtype(file_dtype) == d.config.weight_dtype
                                    ? "as stored"
                                    : "after conversion from " +
                                          std::string(st_dtype_name(file_dtype)) + " to bf16") +
                    " (" + std::string(expert_layout_name(d.info.layout)) + " layout)");
  if (d.has_shared()) {
    d.notes.push_back("shared experts: one dense MLP of intermediate size " +
                      std::to_string(d.shared_config.intermediate_size) +
                      ", computed for every token and added to the routed output");
  }
  d.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return d;
}

}  // namespace moerun::io
