// Loads one MoE layer of a Hugging Face checkpoint into moerun's MoeWeights.
//
// What is copied, and why:
//   w13        always built: gate and up are separate tensors in the file, w13 packs them as
//              rows [0, I) and [I, 2I) of one [E_l, 2I, H] tensor (one copy, or one conversion).
//   w2         zero-copy (a view of the mapping) when the rank's down projections lie back to
//              back in one file, in expert order, in the dtype moerun uses and aligned; else one
//              copy. Hugging Face writers sort tensors by name, so real checkpoints interleave
//              down with gate/up and are copied; moerun's own writer can lay them out adjacently.
//   scales     w13_scale rows [0, I/128) from gate's weight_scale_inv, [I/128, 2I/128) from up's;
//              w2_scale like w2. weight_scale_inv multiplies the fp8 value, exactly as moerun's
//              block scales do, so the values are used as stored.
//   F16/F32    experts are converted to bf16 (round to nearest even); never zero-copy.
//   router     gate.weight and the correction bias are widened to f32 (they are small).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/hf_checkpoint.h"
#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun::io {

struct LoadOptions {
  // Quantize BF16/F16/F32 experts to FP8 e4m3 with 128x128 block scales after loading.
  bool quantize_fp8 = false;
  // Load the experts of rank ep_rank of ep_size only ([r * E / R, (r + 1) * E / R)).
  int ep_size = 1;
  int ep_rank = 0;
  // Reject a NaN or infinite weight, router weight or bias, and an FP8 block scale that is not
  // finite and > 0, naming the file, the tensor and the element (checked as loaded, in the
  // layer's dtype: an F32 value that overflows bf16 is caught too).
  bool check_finite = true;
};

struct LoadStats {
  std::uint64_t mapped_bytes = 0;     // served in place from the mapping
  std::uint64_t copied_bytes = 0;     // copied once, unchanged
  std::uint64_t converted_bytes = 0;  // read and converted (dtype change, quantization)
  double seconds = 0.0;

  std::uint64_t total_bytes() const { return mapped_bytes + copied_bytes + converted_bytes; }
};

// ||dequantize(fp8) - original|| / ||original|| of the on-load quantization, per weight.
struct QuantizationCheck {
  double w13_error = 0.0;
  double w2_error = 0.0;
};

struct LoadedMoeLayer {
  int layer = 0;
  MoeConfig config;            // weight dtype as loaded; ep_size / ep_rank as asked
  MoeLayerInfo info;           // the checkpoint's tensors, as inspected
  HostTensor router_weight;    // [E, H] f32: every expert, routing needs them all
  HostTensor correction_bias;  // [E] f32, DeepSeek-V3 only
  HostTensor w13, w13_scale;   // [E_l, 2I, H], [E_l, 2I/128, H/128]
  TensorView w2, w2_scale;     // views of w2_storage / w2_scale_storage or of the mapping
  HostTensor w2_storage, w2_scale_storage;
  std::vector<std::shared_ptr<const SafetensorsFile>> mapped;  // keeps zero-copy views valid
  LoadStats stats;
  std::optional<QuantizationCheck> quantization;
  std::vector<std::string> notes;  // how each tensor group was loaded, for the CLI

  // This rank's E_l experts, with the correction bias.
  MoeWeights weights() const;
};

LoadedMoeLayer load_moe_layer(const HfCheckpoint& checkpoint, int layer,
                              const LoadOptions& options = {});

}  // namespace moerun::io
