#include "io/hf_checkpoint.h"

#include <algorithm>
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

std::string_view expert_layout_name(ExpertLayout layout) {
  return layout == ExpertLayout::kFused ? "fused" : "per-expert";
}

std::string MoeLayerNames::expert_weight(int expert, const std::string& projection) const {
  return prefix + "experts." + std::to_string(expert) + "." + projection + ".weight";
}

MoeLayerNames moe_layer_names(ModelFamily family, int layer, ExpertLayout layout,
                              const std::string& block) {
  MoeLayerNames n;
  const std::string base = "model.layers." + std::to_string(layer) + ".";
  const bool mixtral = family == ModelFamily::kMixtral;
  n.prefix = base + (block.empty() ? (mixtral ? "block_sparse_moe" : "mlp") : block) + ".";
  n.layout = layout;
  n.gate_name = mixtral ? "w1" : "gate_proj";
  n.up_name = mixtral ? "w3" : "up_proj";
  n.down_name = mixtral ? "w2" : "down_proj";
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

MoeLayerNames HfCheckpoint::names(int layer) const {
  const ModelFamily family = config_.family;
  // Mixtral: transformers 5 renamed block_sparse_moe to mlp; the router tells which one is here.
  std::string block;
  if (family == ModelFamily::kMixtral) {
    const MoeLayerNames v5 = moe_layer_names(family, layer, ExpertLayout::kPerExpert, "mlp");
    block = store_.contains(v5.router) ? "mlp" : "block_sparse_moe";
  }
  MoeLayerNames n = moe_layer_names(family, layer, ExpertLayout::kPerExpert, block);
  const bool fused = store_.contains(n.gate_up()) || store_.contains(n.down_fused());
  if (!fused) return n;
  if (store_.contains(n.gate(0)) || store_.contains(n.down(0))) {
    throw Error(dir_.string() + ": layer " + std::to_string(layer) +
                " holds its experts twice, fused ('" + n.gate_up() + "') and per expert ('" +
                n.gate(0) + "'); expected one layout");
  }
  n.layout = ExpertLayout::kFused;
  return n;
}

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
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size, e = c.num_experts;
  const std::string h_text = "hidden_size " + std::to_string(h);
  const std::string i_text =
      (c.family == ModelFamily::kMixtral ? "intermediate_size " : "moe_intermediate_size ") +
      std::to_string(inter);
  const std::string e_text = "experts " + std::to_string(e);
  MoeLayerInfo info;
  info.layer = layer;
  info.layout = names.layout;
  std::set<std::string> files;

  const StoredTensor router = store_.at(names.router);
  check_float_dtype(router);
  check_shape(router, {e, h}, e_text + ", " + h_text);
  info.router_dtype = router.info->dtype;
  info.router_bytes += router.info->nbytes();
  files.insert(router.file->path());
  if (!names.router_bias.empty()) {
    const StoredTensor bias = store_.at(names.router_bias);
    check_float_dtype(bias);
    check_shape(bias, {e}, e_text);
    info.bias_dtype = bias.info->dtype;
    info.router_bytes += bias.info->nbytes();
    files.insert(bias.file->path());
  }

  // `fraction` of a tensor's bytes belong to the inspected experts (all of them but for a fused
  // tensor of which a rank owns a slice).
  std::optional<StDType> expert_dtype;
  auto check_weight = [&](const std::string& name, const std::vector<std::int64_t>& shape,
                          const std::string& why, double fraction) {
    const StoredTensor w = store_.at(name);
    check_expert_dtype(c, w, expert_dtype);
    check_shape(w, shape, why);
    info.expert_bytes +=
        static_cast<std::uint64_t>(static_cast<double>(w.info->nbytes()) * fraction);
    files.insert(w.file->path());
    if (!c.fp8_block_scaled) return;
    const StoredTensor s = store_.at(scale_name(name));
    check_arg(s.info->dtype == StDType::kF32, "dtype of tensor " + s.where(),
              "F32 (128x128 block scales)", st_dtype_name(s.info->dtype));
    std::vector<std::int64_t> scale_shape = shape;
    scale_shape.end()[-1] = blocks(shape.end()[-1]);
    scale_shape.end()[-2] = blocks(shape.end()[-2]);
    check_shape(s, scale_shape, "128x128 blocks of " + why);
    info.scale_bytes +=
        static_cast<std::uint64_t>(static_cast<double>(s.info->nbytes()) * fraction);
    files.insert(s.file->path());
  };
  if (names.layout == ExpertLayout::kFused) {
    // transformers 5 keeps each expert as out_features x in_features; a [E, H, 2I] tensor is the
    // transposed (in x out) orientation some other writers use, which moerun does not read.
    const double part = static_cast<double>(num_experts) / static_cast<double>(e);
    const StoredTensor gate_up = store_.at(names.gate_up());
    if (gate_up.info->shape == std::vector<std::int64_t>{e, h, 2 * inter} && h != 2 * inter) {
      throw InvalidArgument("shape of tensor " + gate_up.where(),
                            "[E, 2I, H] (each expert out_features x in_features, as transformers "
                            "5 writes it)",
                            gate_up.info->shape_string() + ", the transposed orientation");
    }
    check_weight(names.gate_up(), {e, 2 * inter, h}, e_text + ", 2 x " + i_text + ", " + h_text,
                 part);
    check_weight(names.down_fused(), {e, h, inter}, e_text + ", " + h_text + ", " + i_text, part);
  } else {
    for (int x = first_expert; x < first_expert + num_experts; ++x) {
      check_weight(names.gate(x), {inter, h}, i_text + " x " + h_text, 1.0);
      check_weight(names.up(x), {inter, h}, i_text + " x " + h_text, 1.0);
      check_weight(names.down(x), {h, inter}, h_text + " x " + i_text, 1.0);
    }
  }
  if (c.n_shared_experts > 0) {
    const std::int64_t s = c.shared_intermediate_size();
    const std::string s_text =
        "n_shared_experts " + std::to_string(c.n_shared_experts) + " x " + i_text;
    if (!store_.contains(names.shared("gate_proj"))) {
      const bool defaulted = std::find(c.defaults.begin(), c.defaults.end(),
                                       "n_shared_experts = 1") != c.defaults.end();
      throw Error(dir_.string() + ": missing tensor '" + names.shared("gate_proj") +
                  "': " + c.source + " gives layer " + std::to_string(layer) + " " +
                  std::to_string(c.n_shared_experts) + " shared expert(s)" +
                  (defaulted ? " (n_shared_experts is absent; transformers' default is 1)" : "") +
                  "; a checkpoint without them needs \"n_shared_experts\": 0");
    }
    check_weight(names.shared("gate_proj"), {s, h}, s_text + ", " + h_text, 1.0);
    check_weight(names.shared("up_proj"), {s, h}, s_text + ", " + h_text, 1.0);
    check_weight(names.shared("down_proj"), {h, s}, h_text + ", " + s_text, 1.0);
    info.shared_experts = true;
  }
  info.expert_dtype = expert_dtype.value_or(c.fp8_block_scaled ? StDType::kF8E4M3 : StDType::kBF16);
  info.fp8_scales = c.fp8_block_scaled;
  info.files.assign(files.begin(), files.end());
  return info;
}

}  // namespace moerun::io
