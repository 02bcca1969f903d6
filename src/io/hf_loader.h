// Loads one MoE layer of a Hugging Face checkpoint into host MoeWeights (the plan of
// io/load_plan.h, carried out on the host; hf_device_loader.h uploads the same plan).
//
// What is copied, and why:
//   in place   a tensor whose file pieces lie back to back in one file, in expert order, in the
//              dtype moerun uses and aligned is a zero-copy view of the mapping: the fused layout's
//              gate_up_proj / down_proj (and scales) always, w2 when down projections happen to be
//              adjacent (moerun's own writer can lay them out so).
//   copied     everything else, once: w13 of the per-expert layout packs gate and up, which are
//              separate tensors in the file; Hugging Face writers sort tensors by name, so
//              published checkpoints interleave down with gate/up.
//   scales     w13_scale rows [0, I/128) from gate's weight_scale_inv, [I/128, 2I/128) from up's;
//              weight_scale_inv multiplies the fp8 value, exactly as moerun's block scales do, so
//              the values are used as stored.
//   converted  F16/F32 experts to bf16 (round to nearest even); never zero-copy.
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
  // Also load the shared experts (DeepSeek-V3), when the layer has them.
  bool shared_experts = true;
  // Which of the rank's E_l experts to load (empty: all). The others are zeros that take no
  // memory until written (a layer never reads an expert that no token is routed to), so that a
  // reference over a few rows reads a few experts only.
  std::vector<bool> experts;
  // Reject a NaN or infinite weight, router weight or bias, and an FP8 block scale that is not
  // finite and > 0, naming the file, the tensor and the element (checked as loaded, in the
  // layer's dtype: an F32 value that overflows bf16 is caught too). The device loader
  // (hf_device_loader.h) checks the router weight and bias so, and leaves the experts, which the
  // host never reads there, to the CUDA layers.
  bool check_finite = true;
};

struct LoadStats {
  std::uint64_t mapped_bytes = 0;     // file bytes used in place (host: views of the mapping)
  std::uint64_t copied_bytes = 0;     // file bytes copied once, unchanged
  std::uint64_t converted_bytes = 0;  // file bytes read and converted (dtype change)
  std::uint64_t uploaded_bytes = 0;   // bytes written to the device (device loads only)
  double seconds = 0.0;

  std::uint64_t total_bytes() const { return mapped_bytes + copied_bytes + converted_bytes; }
};

// ||dequantize(fp8) - original|| / ||original|| of the on-load quantization, per weight.
struct QuantizationCheck {
  double w13_error = 0.0;
  double w2_error = 0.0;
};

// A loaded tensor: a view of the mapping (no storage) or of its own host copy.
struct LoadedTensor {
  TensorView view;
  HostTensor storage;
  bool mapped() const { return view.defined() && !storage.defined(); }
};

struct LoadedExperts {
  LoadedTensor w13, w13_scale, w2, w2_scale;
  MoeWeights view(const TensorView& correction_bias = {}) const {
    return {w13.view, w13_scale.view, w2.view, w2_scale.view, correction_bias};
  }
};

struct LoadedMoeLayer {
  int layer = 0;
  MoeConfig config;            // weight dtype as loaded; ep_size / ep_rank as asked
  MoeLayerInfo info;           // the checkpoint's tensors, as inspected
  HostTensor router_weight;    // [E, H] f32: every expert, routing needs them all
  HostTensor correction_bias;  // [E] f32, DeepSeek-V3 only
  LoadedExperts routed;        // [E_l, 2I, H], [E_l, 2I/128, H/128], [E_l, H, I], ...
  MoeConfig shared_config;     // num_experts 0: no shared experts loaded
  LoadedExperts shared;        // one expert of intermediate n_shared x I
  std::vector<std::shared_ptr<const SafetensorsFile>> mapped;  // keeps zero-copy views valid
  LoadStats stats;
  std::optional<QuantizationCheck> quantization;
  std::vector<std::string> notes;  // how each tensor group was loaded, for the CLI

  // This rank's E_l experts, with the correction bias.
  MoeWeights weights() const { return routed.view(correction_bias.view()); }
  bool has_shared() const { return shared_config.num_experts > 0; }
  MoeWeights shared_weights() const { return shared.view(); }
};

LoadedMoeLayer load_moe_layer(const HfCheckpoint& checkpoint, int layer,
                              const LoadOptions& options = {});

// The rank's MoeConfig for `options` (weights as stored), checked; and the router as f32. Shared
// by the host and the device loaders.
MoeConfig layer_config(const HfCheckpoint& checkpoint, const LoadOptions& options);
HostTensor widen_to_f32(const StoredTensor& source, const Shape& shape, LoadStats& stats);
// Rejects (InvalidArgument) the first non-finite value of `widened`, widen_to_f32's copy of
// `source`, naming the file, the tensor and the element.
void check_widened(const StoredTensor& source, const HostTensor& widened);

}  // namespace moerun::io
