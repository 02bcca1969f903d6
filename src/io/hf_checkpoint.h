// A Hugging Face MoE checkpoint directory (config.json + safetensors): the tensor names of each
// family's MoE layers, and the check of those tensors against config.json.
//
// Names, per decoder layer L and expert e, in one of two expert layouts:
//   per-expert (the published checkpoints; transformers 5's save_pretrained by default)
//     <block>.experts.e.{gate,up,down}_proj.weight      gate/up [I, H], down [H, I]
//     (Mixtral: experts.e.{w1,w3,w2}.weight: w1 gate, w3 up, w2 down)
//   fused (transformers 5's runtime layout, save_pretrained(save_original_format=False))
//     <block>.experts.gate_up_proj [E, 2I, H]            rows [0, I) gate, [I, 2I) up
//     <block>.experts.down_proj    [E, H, I]
//   i.e. each expert's out_features x in_features, as nn.functional.linear takes them, gate before
//   up as transformers' gate_up_proj(...).chunk(2) reads them: exactly moerun's w13 and w2.
// <block> is model.layers.L.mlp, except Mixtral checkpoints written before transformers 5:
// model.layers.L.block_sparse_moe. The router is <block>.gate.weight [E, H]; DeepSeek-V3 adds
// <block>.gate.e_score_correction_bias [E] and the shared experts' MLP
// <block>.shared_experts.{gate,up,down}_proj.weight ([S*I, H], [S*I, H], [H, S*I],
// S = n_shared_experts), which moerun computes and adds to the routed output.
// FP8 checkpoints add <weight>_scale_inv (f32, [ceil(N / 128), ceil(K / 128)] per matrix, with a
// leading [E] for the fused tensors): the dequantized weight is fp8 * weight_scale_inv per block.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "io/tensor_store.h"

namespace moerun::io {

enum class ExpertLayout : std::uint8_t { kPerExpert, kFused };
// "per-expert", "fused".
std::string_view expert_layout_name(ExpertLayout layout);

struct MoeLayerNames {
  std::string prefix;  // the block: "model.layers.3.mlp."
  ExpertLayout layout = ExpertLayout::kPerExpert;
  std::string router;                 // gate.weight
  std::string router_bias;            // e_score_correction_bias; empty where the family has none
  std::string shared_experts_prefix;  // empty where the family has none
  std::string gate_name, up_name, down_name;  // per-expert: "gate_proj" / "w1", ...

  // Per-expert layout.
  std::string gate(int expert) const { return expert_weight(expert, gate_name); }
  std::string up(int expert) const { return expert_weight(expert, up_name); }
  std::string down(int expert) const { return expert_weight(expert, down_name); }
  std::string expert_weight(int expert, const std::string& projection) const;
  // Fused layout: every expert in one tensor.
  std::string gate_up() const { return prefix + "experts.gate_up_proj"; }
  std::string down_fused() const { return prefix + "experts.down_proj"; }
  // Shared experts: "gate_proj", "up_proj" or "down_proj".
  std::string shared(const std::string& projection) const {
    return shared_experts_prefix + projection + ".weight";
  }
};

// Where a family's MoE block lives in layer L: "mlp", or "block_sparse_moe" (Mixtral before
// transformers 5).
MoeLayerNames moe_layer_names(ModelFamily family, int layer,
                              ExpertLayout layout = ExpertLayout::kPerExpert,
                              const std::string& block = "");
// "<weight name>_scale_inv": the FP8 block scales of a weight.
std::string scale_name(const std::string& weight_name);

// What one MoE layer holds, after every tensor was checked against config.json.
struct MoeLayerInfo {
  int layer = 0;
  StDType expert_dtype = StDType::kBF16;  // every gate/up/down
  bool fp8_scales = false;                // weight_scale_inv present (f32)
  StDType router_dtype = StDType::kBF16;
  std::optional<StDType> bias_dtype;
  ExpertLayout layout = ExpertLayout::kPerExpert;
  // DeepSeek-V3 shared experts (n_shared_experts > 0): checked, loaded and computed.
  bool shared_experts = false;
  std::uint64_t expert_bytes = 0;  // gate, up and down of the inspected experts (and shared)
  std::uint64_t scale_bytes = 0;
  std::uint64_t router_bytes = 0;  // router weight and bias
  std::vector<std::string> files;  // the safetensors files holding the layer

  std::uint64_t total_bytes() const { return expert_bytes + scale_bytes + router_bytes; }
};

class HfCheckpoint {
 public:
  explicit HfCheckpoint(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const HfConfig& config() const { return config_; }
  const TensorStore& store() const { return store_; }
  // The names layer `layer` uses in these files: its block and its expert layout, found by
  // looking (rejects a layer holding both layouts).
  MoeLayerNames names(int layer) const;

  // Rejects a layer out of range, or dense (saying why and which layers are MoE).
  void require_moe_layer(int layer) const;
  // Checks the router and experts [first_expert, first_expert + num_experts) of `layer`
  // (-1: to the last), and the shared experts: present, dtypes as config.json implies, shapes from
  // its sizes.
  MoeLayerInfo inspect_moe_layer(int layer, int first_expert = 0, int num_experts = -1) const;

 private:
  std::filesystem::path dir_;
  HfConfig config_;
  TensorStore store_;
};

}  // namespace moerun::io
