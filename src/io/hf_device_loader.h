// Loads one MoE layer of a Hugging Face checkpoint straight onto the CUDA device (CUDA builds).
//
// The plan of io/load_plan.h, carried out through pinned staging buffers (cuda/staged_upload.h):
// each file tensor is read from the mapping into a staging buffer, as stored (FP8 codes and their
// weight_scale_inv, BF16) or converted on the way (F16/F32 experts to bf16), while the previous
// buffer is being copied to the device. No host copy of the layer is made. The router weight and
// the correction bias are widened to f32 on the host (they are small), checked as the host loader
// checks them (options.check_finite) and uploaded; the experts' values are left to the CUDA
// layers' checks.
// With quantize_fp8 the experts are loaded and quantized on the host first, then uploaded.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/progress.h"
#include "cuda/device_memory.h"
#include "io/hf_loader.h"

namespace moerun::io {

struct DeviceExperts {
  cuda::DeviceBuffer w13, w13_scale, w2, w2_scale;
  MoeWeights view(const TensorView& correction_bias = {}) const {
    return {w13.view(), w13_scale.view(), w2.view(), w2_scale.view(), correction_bias};
  }
};

struct DeviceMoeLayer {
  int layer = 0;
  MoeConfig config;  // as LoadedMoeLayer::config
  MoeLayerInfo info;
  cuda::DeviceBuffer router_weight;    // [E, H] f32
  cuda::DeviceBuffer correction_bias;  // [E] f32, DeepSeek-V3 only
  DeviceExperts routed;
  MoeConfig shared_config;  // num_experts 0: no shared experts loaded
  DeviceExperts shared;
  // mapped_bytes: file bytes read from the mapping into the staging buffers as stored;
  // converted_bytes: converted on the way (or by the host quantization); uploaded_bytes: sent.
  LoadStats stats;
  std::optional<QuantizationCheck> quantization;
  std::vector<std::string> notes;

  MoeWeights weights() const { return routed.view(correction_bias.view()); }
  bool has_shared() const { return shared_config.num_experts > 0; }
  MoeWeights shared_weights() const { return shared.view(); }
};

// `progress` gets the fraction of the layer's bytes uploaded. Staging: `staging_bytes` per buffer
// (tests use small buffers to cut tensors into many pieces).
DeviceMoeLayer upload_moe_layer(const HfCheckpoint& checkpoint, int layer,
                                const LoadOptions& options = {}, const ProgressFn& progress = {},
                                std::size_t staging_bytes = std::size_t{32} << 20);

}  // namespace moerun::io
