// A Hugging Face MoE checkpoint directory (config.json + safetensors): the tensor names of each
// family's MoE layers, and the check of those tensors against config.json.
//
// Names, per decoder layer L and expert e:
//   DeepSeek-V3, Qwen3-MoE  model.layers.L.mlp.gate.weight [E, H]
//                           model.layers.L.mlp.experts.e.{gate,up,down}_proj.weight
//   DeepSeek-V3 also        model.layers.L.mlp.gate.e_score_correction_bias [E]
//                           (and mlp.shared_experts.*, which moerun does not compute)
//   Mixtral                 model.layers.L.block_sparse_moe.gate.weight [E, H]
//                           model.layers.L.block_sparse_moe.experts.e.{w1,w3,w2}.weight
//                           (w1 gate, w3 up, w2 down)
// gate/up are [I, H], down is [H, I]. FP8 checkpoints add <weight>_scale_inv (f32,
// [ceil(N / 128), ceil(K / 128)]): the dequantized weight is fp8 * weight_scale_inv per block.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "io/tensor_store.h"

namespace moerun::io {

struct MoeLayerNames {
  std::string prefix;                 // "model.layers.3.mlp."
  std::string router;                 // gate.weight
  std::string router_bias;            // e_score_correction_bias; empty where the family has none
  std::string shared_experts_prefix;  // empty where the family has none
  std::string gate_name, up_name, down_name;  // "gate_proj" / "w1", ...

  std::string gate(int expert) const { return expert_weight(expert, gate_name); }
  std::string up(int expert) const { return expert_weight(expert, up_name); }
  std::string down(int expert) const { return expert_weight(expert, down_name); }
  std::string expert_weight(int expert, const std::string& projection) const;
};

MoeLayerNames moe_layer_names(ModelFamily family, int layer);
// "<weight name>_scale_inv": the FP8 block scales of a weight.
std::string scale_name(const std::string& weight_name);

// What one MoE layer holds, after every tensor was checked against config.json.
struct MoeLayerInfo {
  int layer = 0;
  StDType expert_dtype = StDType::kBF16;  // every gate/up/down
  bool fp8_scales = false;                // weight_scale_inv present (f32)
  StDType router_dtype = StDType::kBF16;
  std::optional<StDType> bias_dtype;
  bool shared_experts = false;     // the checkpoint has shared experts here (not computed)
  std::uint64_t expert_bytes = 0;  // gate, up and down of the inspected experts
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
  MoeLayerNames names(int layer) const { return moe_layer_names(config_.family, layer); }

  // Rejects a layer out of range, or dense (saying why and which layers are MoE).
  void require_moe_layer(int layer) const;
  // Checks the router and experts [first_expert, first_expert + num_experts) of `layer`
  // (-1: to the last): present, dtypes as config.json implies, shapes from its sizes.
  MoeLayerInfo inspect_moe_layer(int layer, int first_expert = 0, int num_experts = -1) const;

 private:
  std::filesystem::path dir_;
  HfConfig config_;
  TensorStore store_;
};

}  // namespace moerun::io
