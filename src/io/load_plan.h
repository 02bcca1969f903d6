// How one MoE layer's tensors are assembled from a checkpoint's files: for each tensor moerun uses
// (w13, w13_scale, w2, w2_scale of the routed and of the shared experts), the file tensors, or
// slices of them, that fill it and where. The host loader (hf_loader.h) and the device loader
// (hf_device_loader.h) both carry out this one plan, so the mapping from the files' layouts to
// moerun's lives here only:
//   per-expert  w13[e] rows [0, I) = gate_proj of expert e, rows [I, 2I) = up_proj; w2[e] =
//               down_proj; scales alike (w13_scale rows [0, I/128) from gate's weight_scale_inv)
//   fused       w13[e] = gate_up_proj[e], w2[e] = down_proj[e] (the same layout: slices)
//   shared      one expert: w13[0] = [gate_proj; up_proj], w2[0] = down_proj of shared_experts
// Elements are used as stored (BF16, FP8 codes, f32 scales) or converted (F16/F32 experts to
// bf16, round to nearest even).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "io/hf_checkpoint.h"
#include "moerun/config.h"
#include "moerun/tensor.h"

namespace moerun::io {

// A run of elements of one file tensor and where they go in the destination tensor.
struct PlanPiece {
  StoredTensor source;
  std::uint64_t source_offset = 0;  // bytes into the source tensor's data
  std::int64_t count = 0;           // elements
  std::uint64_t dest_offset = 0;    // bytes into the destination tensor
  int expert = 0;                   // the destination's expert (dim 0) the piece belongs to

  StDType source_dtype() const { return source.info->dtype; }
  std::span<const std::byte> bytes() const;
};

// One destination tensor; its pieces are disjoint and cover every element.
struct TensorPlan {
  const char* name = "";  // "w13", "w2_scale", ...
  DType dtype = DType::kF32;
  Shape shape;  // no dimensions: the tensor is absent (BF16 weights have no scales)
  std::vector<PlanPiece> pieces;

  bool defined() const { return shape.ndim() > 0; }
  std::uint64_t nbytes() const;
  // Whether the piece's elements are stored in the destination's dtype (copied, not converted).
  bool as_stored(const PlanPiece& piece) const;
  // The whole tensor as a view of the mapping, when its pieces lie back to back in one file, in
  // destination order and dtype, aligned to the element size; nullopt otherwise. Read-only memory.
  std::optional<TensorView> mapped_view() const;
};

struct ExpertsPlan {
  TensorPlan w13, w13_scale, w2, w2_scale;
  std::vector<const TensorPlan*> tensors() const { return {&w13, &w13_scale, &w2, &w2_scale}; }
};

struct MoeLayerPlan {
  MoeConfig config;  // the routed experts, this rank's slice (config.ep_rank of ep_size)
  ExpertsPlan routed;
  // DeepSeek-V3 shared experts as a one-expert layer (intermediate n_shared x I, top-1, every
  // token with weight 1); shared_config.num_experts is 0 when there are none or they are left out.
  MoeConfig shared_config;
  ExpertsPlan shared;
  StoredTensor router;       // [E, H]
  StoredTensor router_bias;  // [E]; no file when the family has none
};

// The MoeConfig of a shared-experts MLP of intermediate size `shared_inter` beside `routed`.
MoeConfig shared_experts_config(const MoeConfig& routed, std::int64_t shared_inter);

// The plan for `layer` (already inspected) with `config` giving the rank's expert slice and the
// weight dtype as stored (FP8 or BF16). `with_shared`: include the shared experts (the ranks'
// partial outputs must count them once).
MoeLayerPlan plan_moe_layer(const HfCheckpoint& checkpoint, int layer, const MoeConfig& config,
                            bool with_shared);

}  // namespace moerun::io
