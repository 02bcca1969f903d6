// config.json of each family, as the published checkpoints spell it, read into MoeConfig.
#include "io/hf_config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "moerun/errors.h"

namespace moerun::io {
namespace {

// The MoE fields of deepseek-ai/DeepSeek-V3's config.json.
constexpr const char* kDeepseekV3 = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
  "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
  "num_hidden_layers": 61, "n_routed_experts": 256, "n_shared_experts": 1,
  "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5,
  "norm_topk_prob": true, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
  "first_k_dense_replace": 3, "moe_layer_freq": 1, "torch_dtype": "bfloat16",
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                          "quant_method": "fp8", "weight_block_size": [128, 128]}
})";

// Qwen/Qwen3-30B-A3B.
constexpr const char* kQwen3 = R"({
  "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
  "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
  "num_hidden_layers": 48, "num_experts": 128, "num_experts_per_tok": 8,
  "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [],
  "torch_dtype": "bfloat16"
})";

// mistralai/Mixtral-8x7B-v0.1.
constexpr const char* kMixtral = R"({
  "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_local_experts": 8, "num_experts_per_tok": 2, "torch_dtype": "bfloat16"
})";

std::string error_of(const std::string& text) {
  try {
    parse_hf_config(text, "/ckpt/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no moerun::Error thrown";
  return "";
}

// `base` with `key` set to the JSON value `value_json`.
std::string with(const char* base, const std::string& key, const std::string& value_json) {
  nlohmann::json j = nlohmann::json::parse(base);
  j[key] = nlohmann::json::parse(value_json);
  return j.dump();
}

TEST(HfConfig, DeepseekV3MatchesThePreset) {
  const HfConfig c = parse_hf_config(kDeepseekV3, "config.json");
  EXPECT_EQ(c.family, ModelFamily::kDeepseekV3);
  EXPECT_EQ(c.num_layers, 61);
  EXPECT_TRUE(c.fp8_block_scaled);
  EXPECT_EQ(c.n_shared_experts, 1);
  const MoeConfig m = c.moe_config();
  const MoeConfig preset = model_preset("deepseek-v3");
  EXPECT_EQ(m.hidden_size, preset.hidden_size);
  EXPECT_EQ(m.intermediate_size, preset.intermediate_size);
  EXPECT_EQ(m.num_experts, preset.num_experts);
  EXPECT_EQ(m.weight_dtype, DType::kFP8E4M3);
  EXPECT_EQ(m.routing.mode, RoutingMode::kGroupedTopK);
  EXPECT_EQ(m.routing.top_k, 8);
  EXPECT_EQ(m.routing.num_groups, 8);
  EXPECT_EQ(m.routing.topk_groups, 4);
  EXPECT_TRUE(m.routing.renormalize);
  EXPECT_FLOAT_EQ(m.routing.routed_scaling_factor, 2.5f);
}

TEST(HfConfig, DeepseekV3FirstLayersAreDense) {
  const HfConfig c = parse_hf_config(kDeepseekV3, "config.json");
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_EQ(c.dense_reason(2), "first_k_dense_replace = 3");
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_TRUE(c.is_moe_layer(60));
  EXPECT_EQ(c.moe_layers().size(), 58u);
}

TEST(HfConfig, DeepseekMoeLayerFreq) {
  const HfConfig c = parse_hf_config(with(kDeepseekV3, "moe_layer_freq", "2"), "config.json");
  EXPECT_FALSE(c.is_moe_layer(3));
  EXPECT_EQ(c.dense_reason(3), "moe_layer_freq = 2");
  EXPECT_TRUE(c.is_moe_layer(4));
}

TEST(HfConfig, Qwen3Moe) {
  const HfConfig c = parse_hf_config(kQwen3, "config.json");
  EXPECT_EQ(c.family, ModelFamily::kQwen3Moe);
  EXPECT_FALSE(c.fp8_block_scaled);
  const MoeConfig m = c.moe_config();
  EXPECT_EQ(m.hidden_size, 2048);
  EXPECT_EQ(m.intermediate_size, 768);
  EXPECT_EQ(m.num_experts, 128);
  EXPECT_EQ(m.top_k(), 8);
  EXPECT_EQ(m.weight_dtype, DType::kBF16);
  EXPECT_EQ(m.routing.mode, RoutingMode::kSoftmaxTopK);
  EXPECT_TRUE(m.routing.renormalize);
  EXPECT_EQ(c.moe_layers().size(), 48u);
}

TEST(HfConfig, Qwen3DenseLayers) {
  const HfConfig c = parse_hf_config(with(kQwen3, "mlp_only_layers", "[0, 5]"), "config.json");
  EXPECT_EQ(c.dense_reason(5), "listed in mlp_only_layers");
  EXPECT_TRUE(c.is_moe_layer(1));
  const HfConfig s = parse_hf_config(with(kQwen3, "decoder_sparse_step", "2"), "config.json");
  EXPECT_FALSE(s.is_moe_layer(0));
  EXPECT_TRUE(s.is_moe_layer(1));
}

TEST(HfConfig, Qwen3NormTopkProbFalse) {
  const HfConfig c = parse_hf_config(with(kQwen3, "norm_topk_prob", "false"), "config.json");
  EXPECT_FALSE(c.routing.renormalize);
}

TEST(HfConfig, Mixtral) {
  const HfConfig c = parse_hf_config(kMixtral, "config.json");
  EXPECT_EQ(c.family, ModelFamily::kMixtral);
  const MoeConfig m = c.moe_config();
  const MoeConfig preset = model_preset("mixtral-8x7b");
  EXPECT_EQ(m.hidden_size, preset.hidden_size);
  EXPECT_EQ(m.intermediate_size, preset.intermediate_size);
  EXPECT_EQ(m.num_experts, 8);
  EXPECT_EQ(m.top_k(), 2);
  EXPECT_TRUE(m.routing.renormalize);
  EXPECT_EQ(c.moe_layers().size(), 32u);
}

TEST(HfConfigBad, UnknownModelType) {
  const std::string m = error_of(R"({"model_type": "llama", "hidden_size": 8})");
  EXPECT_NE(m.find("invalid model_type in /ckpt/config.json: expected deepseek_v3, qwen3_moe or "
                   "mixtral, got \"llama\""),
            std::string::npos)
      << m;
}

bool has_default(const HfConfig& c, const std::string& entry) {
  return std::find(c.defaults.begin(), c.defaults.end(), entry) != c.defaults.end();
}

// transformers writes config.json without the values equal to its config class's defaults, so
// a missing key means that default (DeepseekV3Config, Qwen3MoeConfig, MixtralConfig).
TEST(HfConfig, DeepseekV3MissingKeysAreTransformersDefaults) {
  const HfConfig c = parse_hf_config(R"({"model_type": "deepseek_v3"})", "config.json");
  const MoeConfig m = c.moe_config();
  const MoeConfig preset = model_preset("deepseek-v3");
  EXPECT_EQ(c.num_layers, 61);
  EXPECT_EQ(m.hidden_size, preset.hidden_size);
  EXPECT_EQ(m.intermediate_size, preset.intermediate_size);
  EXPECT_EQ(m.num_experts, 256);
  EXPECT_EQ(m.top_k(), 8);
  EXPECT_EQ(m.routing.num_groups, 8);
  EXPECT_EQ(m.routing.topk_groups, 4);
  EXPECT_FLOAT_EQ(m.routing.routed_scaling_factor, 2.5f);
  EXPECT_TRUE(m.routing.renormalize);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_EQ(c.moe_layer_freq, 1);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_FALSE(c.fp8_block_scaled) << "no quantization_config: BF16";
  EXPECT_TRUE(has_default(c, "n_group = 8"));
  EXPECT_TRUE(has_default(c, "routed_scaling_factor = 2.5"));
  EXPECT_TRUE(has_default(c, "norm_topk_prob = true"));
  EXPECT_TRUE(has_default(c, "first_k_dense_replace = 3"));
  // The review's case: a config naming the shapes but not the routing keys.
  nlohmann::json j = nlohmann::json::parse(kDeepseekV3);
  for (const char* key : {"n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob",
                          "first_k_dense_replace"})
    j.erase(key);
  const HfConfig d = parse_hf_config(j.dump(), "config.json");
  EXPECT_EQ(d.routing.num_groups, 8);
  EXPECT_EQ(d.routing.topk_groups, 4);
  EXPECT_FLOAT_EQ(d.routing.routed_scaling_factor, 2.5f);
  EXPECT_TRUE(d.routing.renormalize);
  EXPECT_FALSE(d.is_moe_layer(2));
}

TEST(HfConfig, Qwen3MissingKeysAreTransformersDefaults) {
  const HfConfig c = parse_hf_config(R"({"model_type": "qwen3_moe"})", "config.json");
  EXPECT_EQ(c.num_layers, 24);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.moe_intermediate_size, 768);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.routing.top_k, 8);
  EXPECT_FALSE(c.routing.renormalize) << "Qwen3MoeConfig's norm_topk_prob is False";
  EXPECT_EQ(c.decoder_sparse_step, 1);
  EXPECT_TRUE(c.mlp_only_layers.empty());
  EXPECT_TRUE(has_default(c, "num_local_experts = 128"));
}

TEST(HfConfig, MixtralMissingKeysAreTransformersDefaults) {
  std::string text = kMixtral;
  text.replace(text.find("\"num_local_experts\": 8, "), 24, "");
  const HfConfig c = parse_hf_config(text, "config.json");
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_TRUE(has_default(c, "num_local_experts = 8"));
  const HfConfig bare = parse_hf_config(R"({"model_type": "mixtral"})", "config.json");
  const MoeConfig m = bare.moe_config();
  const MoeConfig preset = model_preset("mixtral-8x7b");
  EXPECT_EQ(m.hidden_size, preset.hidden_size);
  EXPECT_EQ(m.intermediate_size, preset.intermediate_size);
  EXPECT_EQ(m.num_experts, preset.num_experts);
  EXPECT_EQ(m.top_k(), preset.top_k());
  EXPECT_EQ(bare.num_layers, 32);
}

// transformers 4.x writes Qwen3-MoE's expert count as num_experts, 5.x as num_local_experts.
TEST(HfConfig, Qwen3ExpertCountInEitherSpelling) {
  nlohmann::json j = nlohmann::json::parse(kQwen3);
  j.erase("num_experts");
  j["num_local_experts"] = 64;
  EXPECT_EQ(parse_hf_config(j.dump(), "config.json").num_experts, 64);
  j["num_experts"] = 64;
  EXPECT_EQ(parse_hf_config(j.dump(), "config.json").num_experts, 64);
  j["num_experts"] = 32;
  const std::string m = error_of(j.dump());
  EXPECT_NE(m.find("invalid num_experts in /ckpt/config.json: expected the same value as "
                   "num_local_experts (64), got 32"),
            std::string::npos)
      << m;
}

TEST(HfConfigBad, ActivationOtherThanSilu) {
  const std::string m = error_of(with(kQwen3, "hidden_act", "\"gelu\""));
  EXPECT_NE(m.find("invalid hidden_act in /ckpt/config.json: expected \"silu\""), std::string::npos)
      << m;
}

TEST(HfConfigBad, MlpOnlyLayerIndexThatWouldWrap) {
  const std::string m = error_of(with(kQwen3, "mlp_only_layers", "[4294967296]"));
  EXPECT_NE(m.find("mlp_only_layers in /ckpt/config.json: expected a list of layer indices"),
            std::string::npos)
      << m;
}

TEST(HfConfig, Fp8BlockSizeDefaultsTo128) {
  nlohmann::json j = nlohmann::json::parse(kDeepseekV3);
  j["quantization_config"].erase("weight_block_size");
  j["quantization_config"].erase("fmt");
  const HfConfig c = parse_hf_config(j.dump(), "config.json");
  EXPECT_TRUE(c.fp8_block_scaled);
  EXPECT_TRUE(has_default(c, "quantization_config.fmt = \"e4m3\""));
  j["quantization_config"].erase("quant_method");
  const std::string m = error_of(j.dump());
  EXPECT_NE(m.find("quant_method in /ckpt/config.json: expected \"fp8\" (128x128 block-scaled "
                   "e4m3), got no such field"),
            std::string::npos)
      << m;
}

TEST(HfConfigBad, DefaultsThatDoNotFitAreNamed) {
  // 12 experts cannot form transformers' default 8 groups: the error says the 8 was a default.
  nlohmann::json j = nlohmann::json::parse(kDeepseekV3);
  j.erase("n_group");
  j["n_routed_experts"] = 12;
  const std::string m = error_of(j.dump());
  EXPECT_NE(m.find("not supported: invalid num_groups"), std::string::npos) << m;
  EXPECT_NE(m.find("(defaults taken for keys config.json lacks: "), std::string::npos) << m;
  EXPECT_NE(m.find("n_group = 8"), std::string::npos) << m;
}

TEST(HfConfigBad, WrongType) {
  const std::string m = error_of(with(kQwen3, "num_experts_per_tok", "\"8\""));
  EXPECT_NE(m.find("num_experts_per_tok in /ckpt/config.json"), std::string::npos) << m;
}

TEST(HfConfigBad, BlockSizeOtherThan128) {
  std::string text = kDeepseekV3;
  text.replace(text.find("[128, 128]"), 10, "[64, 64]");
  const std::string m = error_of(text);
  EXPECT_NE(m.find("weight_block_size in /ckpt/config.json: expected [128, 128], got [64,64]"),
            std::string::npos)
      << m;
}

TEST(HfConfigBad, SoftmaxScoringIsNotDeepseekV3) {
  const std::string m = error_of(with(kDeepseekV3, "scoring_func", "\"softmax\""));
  EXPECT_NE(m.find("scoring_func"), std::string::npos) << m;
}

TEST(HfConfigBad, InconsistentRouting) {
  const std::string m = error_of(with(kDeepseekV3, "n_group", "7"));
  EXPECT_NE(m.find("not supported: invalid num_groups"), std::string::npos) << m;
}

TEST(HfConfigBad, MalformedJson) {
  const std::string m = error_of("{\"model_type\": ");
  EXPECT_NE(m.find("/ckpt/config.json: malformed JSON"), std::string::npos) << m;
}

TEST(HfConfigBad, LayerOutOfRange) {
  const HfConfig c = parse_hf_config(kMixtral, "config.json");
  EXPECT_THROW(c.is_moe_layer(32), InvalidArgument);
}

}  // namespace
}  // namespace moerun::io
