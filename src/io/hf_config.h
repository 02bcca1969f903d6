// config.json of Hugging Face MoE checkpoints: DeepSeek-V3, Qwen3-MoE and Mixtral, read into
// moerun's MoeConfig, plus which decoder layers are MoE and which are dense.
//
// Missing keys take the defaults of transformers' own config classes (DeepseekV3Config,
// Qwen3MoeConfig, MixtralConfig): transformers writes config.json with only the values that differ
// from those defaults (save_pretrained's use_diff), so any other default would silently describe
// another model. Every default taken is listed in HfConfig::defaults.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "moerun/config.h"

namespace moerun::io {

enum class ModelFamily : std::uint8_t { kDeepseekV3, kQwen3Moe, kMixtral };

// "deepseek_v3", "qwen3_moe", "mixtral": config.json's model_type.
std::string_view model_type_name(ModelFamily family);

struct HfConfig {
  std::string source;  // the config.json path, for messages
  ModelFamily family = ModelFamily::kMixtral;
  int num_layers = 0;
  std::int64_t hidden_size = 0;
  std::int64_t moe_intermediate_size = 0;
  int num_experts = 0;
  RoutingConfig routing;
  // quantization_config {quant_method "fp8", weight_block_size [128, 128]}: experts are FP8
  // e4m3 with one weight_scale_inv per 128x128 block (w = fp8 * weight_scale_inv).
  bool fp8_block_scaled = false;
  // DeepSeek-V3: layers [0, first_k_dense_replace) are dense, then every moe_layer_freq-th.
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  // DeepSeek-V3: one dense SwiGLU MLP of intermediate size n_shared_experts x moe_intermediate_size
  // that every token goes through, added to the routed experts' output (moerun computes it).
  int n_shared_experts = 0;
  // Qwen3-MoE: a layer is MoE when (L + 1) % decoder_sparse_step == 0 and L is not listed.
  int decoder_sparse_step = 1;
  std::vector<int> mlp_only_layers;
  // The keys config.json lacks and the defaults taken for them, e.g. "n_group = 8".
  std::vector<std::string> defaults;

  bool is_moe_layer(int layer) const;
  // Why `layer` is dense, e.g. "first_k_dense_replace = 3"; empty for an MoE layer.
  std::string dense_reason(int layer) const;
  std::vector<int> moe_layers() const;
  // The layer's MoeConfig (routed experts): EP 1, weights FP8 when fp8_block_scaled, else BF16.
  MoeConfig moe_config() const;
  // The intermediate size of the shared experts' MLP (0: none).
  std::int64_t shared_intermediate_size() const { return n_shared_experts * moe_intermediate_size; }
};

// Parses config.json text; `source` names it in errors ("<dir>/config.json").
HfConfig parse_hf_config(std::string_view json_text, const std::string& source);
// Reads <dir>/config.json.
HfConfig read_hf_config(const std::filesystem::path& dir);

}  // namespace moerun::io
