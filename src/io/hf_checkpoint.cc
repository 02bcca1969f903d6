#include "io/hf_checkpoint.h"

#include <set>

#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

std::string shape_text(const std::vector<std::int64_t>& shape) {
  return TensorInfo{"", StDType::kU8, shape, 0, 0}.shape_string();
}

std::int64_t blocks(std::int64_t n) { return (n + kQuantGroup - 1) / kQuantGroup; }

void check_shape(const StoredTensor& t, const std::vector<std::int64_t>& expected,
                 const std::string& from_config) {
  if (t.info->shape != expected) {
    throw InvalidArgument("shape of tensor " + t.where(),
                          shape_text(expected) + " (" + from_config + " from config.json)",
                          t.info->shape_string());
  }
}

bool is_float_dtype(StDType d) {
  return d == StDType::kBF16 || d == StDType::kF16 || d == StDType::kF32;
}

// Router weights and biases: any float dtype, widened to f32 on load.
void check_float_dtype(const StoredTensor& t) {
  if (!is_float_dtype(t.info->dtype)) {
    throw Error("unsupported dtype of tensor " + t.where() + ": expected BF16, F16 or F32, got " +
                std::string(st_dtype_name(t.info->dtype)));
  }
}

// Expert weights: what config.json implies, and the same dtype for every expert of the layer.
void check_expert_dtype(const HfConfig& config, const StoredTensor& t,
                        std::optional<StDType>& layer_dtype) {
  const StDType d = t.info->dtype;
  const std::string field = "dtype of tensor " + t.where();
  if (config.fp8_block_scaled) {
    check_arg(d == StDType::kF8E4M3, field, "F8_E4M3 (config.json's quantization_config is fp8)",
              st_dtype_name(d));
  } else if (d == StDType::kF8E4M3) {
    throw InvalidArgument(field, "BF16, F16 or F32 (config.json has no quantization_config)",
                          "F8_E4M3");
  } else if (!is_float_dtype(d)) {
    throw Error("unsupported dtype of tensor " + t.where() + ": expected BF16, F16 or F32, got " +
                std::string(st_dtype_name(d)));
  }
  if (layer_dtype && *layer_dtype != d) {
    throw InvalidArgument(
        field, std::string(st_dtype_name(*layer_dtype)) + " like the layer's other experts",
        st_dtype_name(d));
  }
  layer_dtype = d;
}

}  // namespace

std::string MoeLayerNames::expert_weight(int expert, const std::string& projection) const {
  return prefix + "experts." + std::to_string(expert) + "." + projection + ".weight";
}

MoeLayerNames moe_layer_names(ModelFamily family, int layer) {
  MoeLayerNames n;
  const std::string base = "model.layers." + std::to_string(layer) + ".";
  if (family == ModelFamily::kMixtral) {
    n.prefix = base + "block_sparse_moe.";
    n.gate_name = "w1";
    n.up_name = "w3";
    n.down_name = "w2";
  } else {
    n.prefix = base + "mlp.";
    n.gate_name = "gate_proj";
    n.up_name = "up_proj";
    n.down_name = "down_proj";
  }
  n.router = n.prefix + "gate.weight";
  if (family == ModelFamily::kDeepseekV3) {
    n.router_bias = n.prefix + "gate.e_score_correction_bias";
    n.shared_experts_prefix = n.prefix + "shared_experts.";
  }
  return n;
}

std::string scale_name(const std::string& weight_name) { return weight_name + "_scale_inv"; }

HfCheckpoint::HfCheckpoint(const std::filesystem::path& dir)
    : dir_(dir), config_(read_hf_config(dir)), store_(dir) {}

void HfCheckpoint::require_moe_layer(int layer) const {
  const std::string reason = config_.dense_reason(layer);  // rejects an out-of-range layer
  if (reason.empty()) return;
  const std::vector<int> moe = config_.moe_layers();
  std::string list;
  for (std::size_t i = 0; i < moe.size() && i < 8; ++i)
    list += (i ? ", " : "") + std::to_string(moe[i]);
  if (moe.size() > 8) list += ", ... " + std::to_string(moe.back());
  throw Error(config_.source + ": layer " + std::to_string(layer) + " is dense (" + reason +
              "), not an MoE layer; MoE layers: " + (list.empty() ? "none" : list));
}

MoeLayerInfo HfCheckpoint::inspect_moe_layer(int layer, int first_expert, int num_experts) const {
  require_moe_layer(layer);
  const HfConfig& c = config_;
  if (num_experts < 0) num_experts = c.num_experts - first_expert;
  check_arg(first_expert >= 0 && num_experts >= 0 && first_expert + num_experts <= c.num_experts,
            "expert range", "within [0, " + std::to_string(c.num_experts) + ")",
            std::to_string(first_expert) + " + " + std::to_string(num_experts));
  const MoeLayerNames names = this->names(layer);
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size;
  const std::string h_text = "hidden_size " + std::to_string(h);
  const std::string i_text =
      (c.family == ModelFamily::kMixtral ? "intermediate_size " : "moe_intermediate_size ") +
      std::to_string(inter);
  MoeLayerInfo info;
  info.layer = layer;
  std::set<std::string> files;

  const StoredTensor router = store_.at(names.router);
  check_float_dtype(router);
  check_shape(router, {c.num_experts, h},
              "experts " + std::to_string(c.num_experts) + ", " + h_text);
  info.router_dtype = router.info->dtype;
  info.router_bytes += router.info->nbytes();
  files.insert(router.file->path());
  if (!names.router_bias.empty()) {
    const StoredTensor bias = store_.at(names.router_bias);
    check_float_dtype(bias);
    check_shape(bias, {c.num_experts}, "experts " + std::to_string(c.num_experts));
    info.bias_dtype = bias.info->dtype;
    info.router_bytes += bias.info->nbytes();
    files.insert(bias.file->path());
  }
  info.shared_experts = !names.shared_experts_prefix.empty() &&
                        store_.contains(names.shared_experts_prefix + "gate_proj.weight");

  std::optional<StDType> expert_dtype;
  auto check_weight = [&](const std::string& name, std::int64_t n, std::int64_t k,
                          const std::string& why) {
    const StoredTensor w = store_.at(name);
    check_expert_dtype(c, w, expert_dtype);
    check_shape(w, {n, k}, why);
    info.expert_bytes += w.info->nbytes();
    files.insert(w.file->path());
    if (!c.fp8_block_scaled) return;
    const StoredTensor s = store_.at(scale_name(name));
    check_arg(s.info->dtype == StDType::kF32, "dtype of tensor " + s.where(),
              "F32 (128x128 block scales)", st_dtype_name(s.info->dtype));
    check_shape(s, {blocks(n), blocks(k)}, "128x128 blocks of " + why);
    info.scale_bytes += s.info->nbytes();
    files.insert(s.file->path());
  };
  for (int e = first_expert; e < first_expert + num_experts; ++e) {
    check_weight(names.gate(e), inter, h, i_text + " x " + h_text);
    check_weight(names.up(e), inter, h, i_text + " x " + h_text);
    check_weight(names.down(e), h, inter, h_text + " x " + i_text);
  }
  info.expert_dtype = expert_dtype.value_or(c.fp8_block_scaled ? StDType::kF8E4M3 : StDType::kBF16);
  info.fp8_scales = c.fp8_block_scaled;
  info.files.assign(files.begin(), files.end());
  return info;
}

}  // namespace moerun::io
