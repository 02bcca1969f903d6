#include "io/hf_config.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/json_brief.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

using nlohmann::json;

// Field readers: a mistyped field is named with the file it should be in; a missing one takes
// transformers' default for the family, recorded in `defaults`.
class Fields {
 public:
  Fields(const json& j, const std::string& source, std::vector<std::string>& defaults)
      : j_(j), source_(source), defaults_(defaults) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  std::int64_t integer(const char* key) const {
    const json& v = j_.at(key);
    if (!v.is_number_integer()) wrong(key, "an integer", v);
    return v.get<std::int64_t>();
  }
  std::int64_t integer_or(const char* key, std::int64_t fallback) const {
    if (has(key)) return integer(key);
    took(key, std::to_string(fallback));
    return fallback;
  }
  int positive_int_or(const char* key, int fallback) const {
    return has(key) ? positive(key, integer(key)) : static_cast<int>(integer_or(key, fallback));
  }
  double number_or(const char* key, double fallback) const {
    if (!has(key)) {
      std::ostringstream text;
      text << fallback;
      took(key, text.str());
      return fallback;
    }
    const json& v = j_.at(key);
    if (!v.is_number()) wrong(key, "a number", v);
    return v.get<double>();
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) {
      took(key, fallback ? "true" : "false");
      return fallback;
    }
    const json& v = j_.at(key);
    if (!v.is_boolean()) wrong(key, "true or false", v);
    return v.get<bool>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    if (!has(key)) {
      if (!fallback.empty()) took(key, "\"" + fallback + "\"");
      return fallback;
    }
    const json& v = j_.at(key);
    if (!v.is_string()) wrong(key, "a string", v);
    return v.get<std::string>();
  }
  [[noreturn]] void wrong(const char* key, const std::string& expected, const json& v) const {
    throw InvalidArgument(std::string(key) + " in " + source_, expected, json_brief(v));
  }
  int positive(const char* key, std::int64_t v) const {
    check_arg(v > 0 && v <= (std::int64_t{1} << 30), std::string(key) + " in " + source_, "> 0", v);
    return static_cast<int>(v);
  }

 private:
  void took(const char* key, const std::string& value) const {
    defaults_.push_back(std::string(key) + " = " + value);
  }
  const json& j_;
  const std::string& source_;
  std::vector<std::string>& defaults_;
};

void parse_quantization(const json& j, HfConfig& c) {
  if (!j.contains("quantization_config") || j.at("quantization_config").is_null()) return;
  const json& q = j.at("quantization_config");
  const std::string field = "quantization_config in " + c.source;
  check_arg(q.is_object(), field, "an object", json_brief(q));
  std::vector<std::string> quant_defaults;
  const Fields f(q, c.source, quant_defaults);
  // quant_method names the quantizer: no default could stand for it.
  const std::string method = f.has("quant_method") ? f.string_or("quant_method", "") : "";
  check_arg(method == "fp8", "quantization_config.quant_method in " + c.source,
            "\"fp8\" (128x128 block-scaled e4m3)", method.empty() ? "no such field" : method);
  // FineGrainedFP8Config's defaults: fmt e4m3, weight_block_size (128, 128).
  const std::string fmt = f.string_or("fmt", "e4m3");
  check_arg(fmt == "e4m3", "quantization_config.fmt in " + c.source, "\"e4m3\"", fmt);
  const json block = q.contains("weight_block_size") && !q.at("weight_block_size").is_null()
                         ? q.at("weight_block_size")
                         : json::array({128, 128});
  check_arg(block == json::array({128, 128}),
            "quantization_config.weight_block_size in " + c.source, "[128, 128]",
            json_brief(block));
  for (const auto& d : quant_defaults) c.defaults.push_back("quantization_config." + d);
  c.fp8_block_scaled = true;
}

// DeepseekV3Config's defaults (transformers), and DeepSeek's own configuration_deepseek.py for
// the keys transformers does not have (moe_layer_freq, scoring_func, topk_method).
void parse_deepseek(const Fields& f, HfConfig& c) {
  c.num_layers = f.positive_int_or("num_hidden_layers", 61);
  c.hidden_size = f.positive_int_or("hidden_size", 7168);
  c.routing.top_k = f.positive_int_or("num_experts_per_tok", 8);
  c.num_experts = f.positive_int_or("n_routed_experts", 256);
  c.moe_intermediate_size = f.positive_int_or("moe_intermediate_size", 2048);
  c.first_k_dense_replace = static_cast<int>(f.integer_or("first_k_dense_replace", 3));
  check_arg(c.first_k_dense_replace >= 0, "first_k_dense_replace in " + c.source, ">= 0",
            c.first_k_dense_replace);
  c.moe_layer_freq = f.positive_int_or("moe_layer_freq", 1);
  c.n_shared_experts = static_cast<int>(f.integer_or("n_shared_experts", 1));
  check_arg(c.n_shared_experts >= 0 && c.n_shared_experts <= 64, "n_shared_experts in " + c.source,
            "0 .. 64", c.n_shared_experts);
  // moerun implements DeepSeek-V3's router only: sigmoid scores, noaux_tc grouped top-k.
  const std::string scoring = f.string_or("scoring_func", "sigmoid");
  check_arg(scoring == "sigmoid", "scoring_func in " + c.source, "\"sigmoid\"", scoring);
  const std::string method = f.string_or("topk_method", "noaux_tc");
  check_arg(method == "noaux_tc", "topk_method in " + c.source, "\"noaux_tc\"", method);
  c.routing.mode = RoutingMode::kGroupedTopK;
  c.routing.num_groups = f.positive_int_or("n_group", 8);
  c.routing.topk_groups = f.positive_int_or("topk_group", 4);
  c.routing.routed_scaling_factor = static_cast<float>(f.number_or("routed_scaling_factor", 2.5));
  c.routing.renormalize = f.boolean_or("norm_topk_prob", true);
}

// The expert count of Qwen3-MoE: transformers 4.x writes num_experts, 5.x num_local_experts (with
// num_experts as an alias of it); both present must agree.
int qwen3_experts(const Fields& f, const HfConfig& c) {
  const bool old_key = f.has("num_experts"), new_key = f.has("num_local_experts");
  if (old_key && new_key) {
    const int a = f.positive("num_experts", f.integer("num_experts"));
    const int b = f.positive("num_local_experts", f.integer("num_local_experts"));
    check_arg(a == b, "num_experts in " + c.source,
              "the same value as num_local_experts (" + std::to_string(b) + ")", a);
    return a;
  }
  if (old_key) return f.positive("num_experts", f.integer("num_experts"));
  return f.positive_int_or("num_local_experts", 128);
}

// Qwen3MoeConfig's defaults.
void parse_qwen3(const json& j, const Fields& f, HfConfig& c) {
  c.num_layers = f.positive_int_or("num_hidden_layers", 24);
  c.hidden_size = f.positive_int_or("hidden_size", 2048);
  c.routing.top_k = f.positive_int_or("num_experts_per_tok", 8);
  c.num_experts = qwen3_experts(f, c);
  c.moe_intermediate_size = f.positive_int_or("moe_intermediate_size", 768);
  c.decoder_sparse_step = f.positive_int_or("decoder_sparse_step", 1);
  if (f.has("mlp_only_layers")) {
    const json& layers = j.at("mlp_only_layers");
    if (!layers.is_array()) f.wrong("mlp_only_layers", "a list of layer indices", layers);
    for (const auto& l : layers) {
      // Checked before narrowing: a huge index must not wrap onto a real layer.
      if (!l.is_number_integer() || l.get<std::int64_t>() < 0 ||
          l.get<std::int64_t>() > std::numeric_limits<int>::max()) {
        f.wrong("mlp_only_layers", "a list of layer indices (0 .. 2^31 - 1)", layers);
      }
      c.mlp_only_layers.push_back(static_cast<int>(l.get<std::int64_t>()));
    }
  }
  c.routing.mode = RoutingMode::kSoftmaxTopK;
  c.routing.renormalize = f.boolean_or("norm_topk_prob", false);
}

// MixtralConfig's defaults.
void parse_mixtral(const Fields& f, HfConfig& c) {
  c.num_layers = f.positive_int_or("num_hidden_layers", 32);
  c.hidden_size = f.positive_int_or("hidden_size", 4096);
  c.routing.top_k = f.positive_int_or("num_experts_per_tok", 2);
  c.num_experts = f.positive_int_or("num_local_experts", 8);
  c.moe_intermediate_size = f.positive_int_or("intermediate_size", 14336);
  // Mixtral's softmax over the top-k logits equals the renormalized softmax top-k.
  c.routing.mode = RoutingMode::kSoftmaxTopK;
  c.routing.renormalize = true;
}

}  // namespace

std::string_view model_type_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::kDeepseekV3:
      return "deepseek_v3";
    case ModelFamily::kQwen3Moe:
      return "qwen3_moe";
    case ModelFamily::kMixtral:
      return "mixtral";
  }
  return "unknown";
}

bool HfConfig::is_moe_layer(int layer) const { return dense_reason(layer).empty(); }

std::string HfConfig::dense_reason(int layer) const {
  check_arg(layer >= 0 && layer < num_layers, "layer",
            "0 <= layer < num_hidden_layers (" + std::to_string(num_layers) + ")", layer);
  switch (family) {
    case ModelFamily::kDeepseekV3:
      if (layer < first_k_dense_replace) {
        return "first_k_dense_replace = " + std::to_string(first_k_dense_replace);
      }
      if (layer % moe_layer_freq != 0) return "moe_layer_freq = " + std::to_string(moe_layer_freq);
      return "";
    case ModelFamily::kQwen3Moe:
      if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) !=
          mlp_only_layers.end()) {
        return "listed in mlp_only_layers";
      }
      if ((layer + 1) % decoder_sparse_step != 0) {
        return "decoder_sparse_step = " + std::to_string(decoder_sparse_step);
      }
      return "";
    case ModelFamily::kMixtral:
      return "";
  }
  return "";
}

std::vector<int> HfConfig::moe_layers() const {
  std::vector<int> layers;
  for (int l = 0; l < num_layers; ++l) {
    if (is_moe_layer(l)) layers.push_back(l);
  }
  return layers;
}

MoeConfig HfConfig::moe_config() const {
  MoeConfig c;
  c.hidden_size = hidden_size;
  c.intermediate_size = moe_intermediate_size;
  c.num_experts = num_experts;
  c.routing = routing;
  c.weight_dtype = fp8_block_scaled ? DType::kFP8E4M3 : DType::kBF16;
  return c;
}

HfConfig parse_hf_config(std::string_view json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    throw Error(source + ": malformed JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(source + ": malformed config: not a JSON object");
  HfConfig c;
  c.source = source;
  const Fields f(j, source, c.defaults);
  const std::string type = f.has("model_type") ? f.string_or("model_type", "") : "";
  if (type == "deepseek_v3") {
    c.family = ModelFamily::kDeepseekV3;
  } else if (type == "qwen3_moe") {
    c.family = ModelFamily::kQwen3Moe;
  } else if (type == "mixtral") {
    c.family = ModelFamily::kMixtral;
  } else {
    throw InvalidArgument("model_type in " + source, "deepseek_v3, qwen3_moe or mixtral",
                          type.empty() ? "none" : "\"" + type + "\"");
  }
  // Experts are SwiGLU in all three families; moerun computes SiLU only.
  const std::string act = f.string_or("hidden_act", "silu");
  check_arg(act == "silu", "hidden_act in " + source, "\"silu\" (SwiGLU experts)", act);
  if (c.family == ModelFamily::kDeepseekV3) parse_deepseek(f, c);
  if (c.family == ModelFamily::kQwen3Moe) parse_qwen3(j, f, c);
  if (c.family == ModelFamily::kMixtral) parse_mixtral(f, c);
  parse_quantization(j, c);
  try {
    c.moe_config().validate();
  } catch (const Error& e) {
    std::string reason = e.what();
    if (reason.starts_with("moerun: ")) reason.erase(0, 8);
    std::string taken;
    for (const auto& d : c.defaults) taken += (taken.empty() ? "" : ", ") + d;
    throw Error(
        source + ": the MoE layer it describes is not supported: " + reason +
        (taken.empty() ? "" : " (defaults taken for keys config.json lacks: " + taken + ")"));
  }
  return c;
}

HfConfig read_hf_config(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path.string() + ": cannot open (is " + dir.string() + " a model directory?)");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_hf_config(text.str(), path.string());
}

}  // namespace moerun::io
