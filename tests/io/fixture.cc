#include "fixture.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "core/synthetic.h"
#include "io/convert.h"
#include "moerun/errors.h"

namespace moerun::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  std::random_device random;
  path_ = fs::temp_directory_path() /
          ("moerun_io_" + std::to_string(random()) + "_" + std::to_string(counter++));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

// float -> IEEE binary16, round to nearest even, for the moderate finite values fixtures hold.
std::uint16_t float_to_f16(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  if (std::bit_cast<float>(magnitude) < 0x1p-14f) {  // subnormal: a multiple of 2^-24
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(
                                                 std::bit_cast<float>(magnitude) * 0x1p24f)));
  }
  const std::uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded >> 13) - (112u << 10)));
}

template <class T>
void append(std::vector<std::byte>& out, T value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), p, p + sizeof(T));
}

// Values in `dtype`: normal(0, std) for float dtypes; for F8_E4M3, uniform codes in [-448, 448].
StoredBytes random_tensor(io::StDType dtype, std::vector<std::int64_t> shape, float std_dev,
                          std::uint64_t seed, std::uint64_t stream) {
  StoredBytes t{dtype, std::move(shape), {}};
  std::int64_t n = 1;
  for (auto e : t.shape) n *= e;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto index = static_cast<std::uint64_t>(i);
    const float v = std_dev * standard_normal(seed, stream, index);
    switch (dtype) {
      case io::StDType::kBF16:
        append(t.bytes, float_to_bf16(v).bits);
        break;
      case io::StDType::kF16:
        append(t.bytes, float_to_f16(v));
        break;
      case io::StDType::kF32:
        append(t.bytes, v);
        break;
      case io::StDType::kF8E4M3:
        append(t.bytes,
               float_to_fp8e4m3((2.0f * uniform01(seed, stream, index) - 1.0f) * kFp8E4M3Max).bits);
        break;
      default:
        throw Error("fixture: no random values of this dtype");
    }
  }
  return t;
}

// weight_scale_inv of an FP8 [n, k] weight: positive, so that code * scale has std ~ target.
StoredBytes random_scales(std::int64_t n, std::int64_t k, float target_std, std::uint64_t seed,
                          std::uint64_t stream) {
  StoredBytes t{io::StDType::kF32, {(n + 127) / 128, (k + 127) / 128}, {}};
  const float base = target_std * std::sqrt(3.0f) / kFp8E4M3Max;
  for (std::int64_t i = 0; i < t.shape[0] * t.shape[1]; ++i) {
    append(t.bytes, base * (0.75f + 0.5f * uniform01(seed, stream, static_cast<std::uint64_t>(i))));
  }
  return t;
}

// "model.layers.L.mlp." or, for Mixtral before transformers 5, "...block_sparse_moe.".
std::string block(const FixtureOptions& o, int layer) {
  const bool old_mixtral = o.family == io::ModelFamily::kMixtral && !o.mixtral_mlp_block;
  return "model.layers." + std::to_string(layer) + (old_mixtral ? ".block_sparse_moe." : ".mlp.");
}

// Stacks the per-expert tensors `name_of(e)` ([R, C] each) into one [E, R, C] tensor.
template <class NameOf>
StoredBytes stack_experts(std::map<std::string, StoredBytes>& tensors, int experts,
                          NameOf&& name_of) {
  StoredBytes out{tensors.at(name_of(0)).dtype, {}, {}};
  for (int e = 0; e < experts; ++e) {
    const StoredBytes& t = tensors.at(name_of(e));
    if (e == 0) out.shape = {experts, t.shape[0], t.shape[1]};
    out.bytes.insert(out.bytes.end(), t.bytes.begin(), t.bytes.end());
  }
  return out;
}

// Replaces layer `l`'s per-expert tensors by transformers 5's fused ones.
void fuse_experts(Fixture& f, const std::string& mlp, const char* gate, const char* up,
                  const char* down) {
  const FixtureOptions& o = f.options;
  const bool fp8 = o.expert_dtype == io::StDType::kF8E4M3;
  auto name = [&](int e, const char* proj, const char* suffix) {
    return mlp + "experts." + std::to_string(e) + "." + proj + ".weight" + suffix;
  };
  for (const char* suffix : {"", "_scale_inv"}) {
    if (*suffix != '\0' && !fp8) continue;
    // gate_up[e] = [gate[e]; up[e]] row-wise: one [2R, C] matrix per expert.
    std::map<std::string, StoredBytes> joined;
    for (int e = 0; e < o.experts; ++e) {
      StoredBytes g = f.tensors.at(name(e, gate, suffix));
      const StoredBytes& u = f.tensors.at(name(e, up, suffix));
      g.shape[0] += u.shape[0];
      g.bytes.insert(g.bytes.end(), u.bytes.begin(), u.bytes.end());
      joined[std::to_string(e)] = std::move(g);
    }
    f.tensors[mlp + "experts.gate_up_proj" + suffix] =
        stack_experts(joined, o.experts, [](int e) { return std::to_string(e); });
    f.tensors[mlp + "experts.down_proj" + suffix] =
        stack_experts(f.tensors, o.experts, [&](int e) { return name(e, down, suffix); });
    for (int e = 0; e < o.experts; ++e) {
      for (const char* proj : {gate, up, down}) f.tensors.erase(name(e, proj, suffix));
    }
  }
}

nlohmann::json make_config(const FixtureOptions& o) {
  nlohmann::json c;
  c["num_hidden_layers"] = o.num_layers;
  c["hidden_size"] = o.hidden;
  c["num_experts_per_tok"] = o.top_k;
  c["vocab_size"] = 16;
  c["rms_norm_eps"] = 1e-6;
  c["torch_dtype"] = "bfloat16";
  switch (o.family) {
    case io::ModelFamily::kDeepseekV3:
      c["model_type"] = "deepseek_v3";
      c["architectures"] = {"DeepseekV3ForCausalLM"};
      c["n_routed_experts"] = o.experts;
      c["moe_intermediate_size"] = o.inter;
      c["intermediate_size"] = 2 * o.inter;
      c["n_shared_experts"] = o.shared_experts;
      c["first_k_dense_replace"] = o.dense_layers;
      c["moe_layer_freq"] = 1;
      c["n_group"] = o.groups;
      c["topk_group"] = o.topk_groups;
      c["routed_scaling_factor"] = o.routed_scaling_factor;
      c["norm_topk_prob"] = true;
      c["scoring_func"] = "sigmoid";
      c["topk_method"] = "noaux_tc";
      break;
    case io::ModelFamily::kQwen3Moe: {
      c["model_type"] = "qwen3_moe";
      c["architectures"] = {"Qwen3MoeForCausalLM"};
      c[o.qwen3_num_local_experts ? "num_local_experts" : "num_experts"] = o.experts;
      c["moe_intermediate_size"] = o.inter;
      c["intermediate_size"] = 2 * o.inter;
      c["norm_topk_prob"] = true;
      c["decoder_sparse_step"] = 1;
      std::vector<int> dense;
      for (int l = 0; l < o.dense_layers; ++l) dense.push_back(l);
      c["mlp_only_layers"] = dense;
      break;
    }
    case io::ModelFamily::kMixtral:
      c["model_type"] = "mixtral";
      c["architectures"] = {"MixtralForCausalLM"};
      c["num_local_experts"] = o.experts;
      c["intermediate_size"] = o.inter;
      break;
  }
  if (o.expert_dtype == io::StDType::kF8E4M3) {
    c["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {128, 128}}};
  }
  return c;
}

}  // namespace

FixtureOptions deepseek_v3_options() {
  FixtureOptions o;
  o.family = io::ModelFamily::kDeepseekV3;
  o.num_layers = 3;
  o.dense_layers = 1;
  o.hidden = 256;
  o.inter = 128;
  o.experts = 16;
  o.top_k = 4;
  o.groups = 4;
  o.topk_groups = 2;
  o.routed_scaling_factor = 2.5f;
  o.expert_dtype = io::StDType::kF8E4M3;
  o.router_dtype = io::StDType::kBF16;
  o.shards = 2;
  return o;
}

FixtureOptions qwen3_moe_options() {
  FixtureOptions o;
  o.family = io::ModelFamily::kQwen3Moe;
  o.hidden = 128;
  o.inter = 64;
  o.experts = 8;
  o.top_k = 2;
  return o;
}

FixtureOptions mixtral_options() {
  FixtureOptions o;
  o.family = io::ModelFamily::kMixtral;
  o.hidden = 64;
  o.inter = 96;
  o.experts = 4;
  o.top_k = 2;
  return o;
}

std::vector<FixtureCase> layout_cases() {
  std::vector<FixtureCase> cases;
  auto add = [&](std::string name, FixtureOptions o, int layer) {
    cases.push_back({std::move(name), o, layer});
  };
  FixtureOptions d = deepseek_v3_options();
  add("DeepseekV3Fp8PerExpert", d, 1);
  d.fused = true;
  add("DeepseekV3Fp8Fused", d, 2);
  d.shared_experts = 2;
  add("DeepseekV3Fp8FusedTwoSharedExperts", d, 1);
  d.expert_dtype = io::StDType::kBF16;
  d.shared_experts = 0;
  d.fused = false;
  d.shards = 1;
  add("DeepseekV3Bf16NoSharedExperts", d, 1);
  FixtureOptions q = qwen3_moe_options();
  add("Qwen3MoeBf16PerExpert", q, 1);
  q.fused = true;
  q.qwen3_num_local_experts = true;
  add("Qwen3MoeBf16FusedNumLocalExperts", q, 0);
  FixtureOptions m = mixtral_options();
  add("MixtralBf16BlockSparseMoe", m, 0);
  m.mixtral_mlp_block = true;
  add("MixtralBf16MlpPerExpert", m, 1);
  m.fused = true;
  add("MixtralBf16MlpFused", m, 0);
  return cases;
}

void write_config(const Fixture& fixture) {
  std::ofstream out(fixture.dir / "config.json");
  out << fixture.config.dump(2);
}

Fixture write_fixture(const fs::path& dir, const FixtureOptions& o) {
  Fixture f{dir, o, make_config(o), {}};
  fs::create_directories(dir);
  write_config(f);
  const bool fp8 = o.expert_dtype == io::StDType::kF8E4M3;
  std::uint64_t stream = 100;
  auto add_weight = [&](const std::string& name, std::int64_t n, std::int64_t k) {
    const float target = 1.0f / std::sqrt(static_cast<float>(k));
    f.tensors[name] = random_tensor(o.expert_dtype, {n, k}, target, o.seed, stream++);
    if (fp8) f.tensors[name + "_scale_inv"] = random_scales(n, k, target, o.seed, stream++);
  };
  const io::HfConfig hf = io::parse_hf_config(f.config.dump(), "fixture");
  const bool mixtral = o.family == io::ModelFamily::kMixtral;
  const char* gate = mixtral ? "w1" : "gate_proj";
  const char* up = mixtral ? "w3" : "up_proj";
  const char* down = mixtral ? "w2" : "down_proj";
  f.tensors["model.embed_tokens.weight"] =
      random_tensor(io::StDType::kBF16, {16, o.hidden}, 1.0f, o.seed, stream++);
  for (int l = 0; l < o.num_layers; ++l) {
    const std::string base = "model.layers." + std::to_string(l) + ".";
    f.tensors[base + "input_layernorm.weight"] =
        random_tensor(io::StDType::kBF16, {o.hidden}, 1.0f, o.seed, stream++);
    const std::string mlp = block(o, l);
    if (!hf.is_moe_layer(l)) {  // a dense MLP, as the real models have in their first layers
      add_weight(mlp + "gate_proj.weight", 2 * o.inter, o.hidden);
      add_weight(mlp + "up_proj.weight", 2 * o.inter, o.hidden);
      add_weight(mlp + "down_proj.weight", o.hidden, 2 * o.inter);
      continue;
    }
    f.tensors[mlp + "gate.weight"] =
        random_tensor(o.router_dtype, {o.experts, o.hidden},
                      1.0f / std::sqrt(static_cast<float>(o.hidden)), o.seed, stream++);
    for (int e = 0; e < o.experts; ++e) {
      const std::string expert = mlp + "experts." + std::to_string(e) + ".";
      add_weight(expert + gate + ".weight", o.inter, o.hidden);
      add_weight(expert + up + ".weight", o.inter, o.hidden);
      add_weight(expert + down + ".weight", o.hidden, o.inter);
    }
    if (o.fused) fuse_experts(f, mlp, gate, up, down);
    if (o.family == io::ModelFamily::kDeepseekV3) {
      StoredBytes bias{io::StDType::kF32, {o.experts}, {}};
      for (int e = 0; e < o.experts; ++e) {
        append(bias.bytes,
               0.1f * (uniform01(o.seed, stream, static_cast<std::uint64_t>(e)) - 0.5f));
      }
      ++stream;
      f.tensors[mlp + "gate.e_score_correction_bias"] = std::move(bias);
      if (o.shared_experts > 0) {
        const std::int64_t s = o.shared_experts * o.inter;
        add_weight(mlp + "shared_experts.gate_proj.weight", s, o.hidden);
        add_weight(mlp + "shared_experts.up_proj.weight", s, o.hidden);
        add_weight(mlp + "shared_experts.down_proj.weight", o.hidden, s);
      }
    }
  }

  // Order: by name, as Hugging Face's writer sorts; optionally each layer's down projections
  // (weights, then their scales) moved to the end, back to back in expert order.
  std::vector<std::string> order;
  for (const auto& [name, t] : f.tensors) order.push_back(name);
  if (o.down_back_to_back) {
    std::vector<std::string> moved;
    for (int l = 0; l < o.num_layers; ++l) {
      if (!hf.is_moe_layer(l)) continue;
      const std::string mlp = block(o, l);
      for (const char* suffix : {".weight", ".weight_scale_inv"}) {
        for (int e = 0; e < o.experts; ++e) {
          const std::string name = mlp + "experts." + std::to_string(e) + "." + down + suffix;
          if (f.tensors.count(name)) moved.push_back(name);
        }
      }
    }
    std::erase_if(order, [&](const std::string& n) {
      return std::find(moved.begin(), moved.end(), n) != moved.end();
    });
    order.insert(order.end(), moved.begin(), moved.end());
  }

  const int shards = std::max(1, o.shards);
  nlohmann::json weight_map = nlohmann::json::object();
  std::uint64_t total = 0;
  for (int s = 0; s < shards; ++s) {
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05d-of-%05d.safetensors", s + 1, shards);
    const std::string name = shards == 1 ? "model.safetensors" : file;
    std::vector<io::TensorToWrite> tensors;
    const std::size_t lo = order.size() * s / shards, hi = order.size() * (s + 1) / shards;
    for (std::size_t i = lo; i < hi; ++i) {
      const StoredBytes& t = f.tensors.at(order[i]);
      tensors.push_back({order[i], t.dtype, t.shape, t.bytes});
      weight_map[order[i]] = name;
      total += t.bytes.size();
    }
    io::write_safetensors(dir / name, tensors, {{"format", "pt"}});
  }
  if (shards > 1) {
    std::ofstream index(dir / "model.safetensors.index.json");
    index << nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(
        2);
  }
  return f;
}

MoeWeights ReferenceLayer::weights() const {
  return {w13.view(), w13_scale.view(), w2.view(), w2_scale.view(), correction_bias.view()};
}

MoeWeights ReferenceLayer::shared_weights() const {
  return {shared_w13.view(), shared_w13_scale.view(), shared_w2.view(), shared_w2_scale.view(), {}};
}

namespace {

// Element i of a stored float tensor, widened.
float stored_float(const StoredBytes& t, std::int64_t i) {
  switch (t.dtype) {
    case io::StDType::kBF16: {
      std::uint16_t b;
      std::memcpy(&b, t.bytes.data() + 2 * i, 2);
      return bf16_to_float(bf16{b});
    }
    case io::StDType::kF16: {
      std::uint16_t b;
      std::memcpy(&b, t.bytes.data() + 2 * i, 2);
      return io::f16_to_float(b);
    }
    case io::StDType::kF32: {
      float v;
      std::memcpy(&v, t.bytes.data() + 4 * i, 4);
      return v;
    }
    default:
      throw Error("fixture: not a float tensor");
  }
}

// Copies `t` ([rows, cols], or expert `slice` of a [E, rows, cols] tensor) into rows
// [row0, row0 + rows) of expert `e` of `dst` [E, R, cols].
void place(const StoredBytes& t, HostTensor& dst, std::int64_t e, std::int64_t row0,
           std::int64_t slice = -1) {
  const bool stacked = slice >= 0;
  const std::int64_t rows = t.shape[stacked ? 1 : 0], cols = t.shape[stacked ? 2 : 1];
  const std::int64_t offset = (e * dst.size(1) + row0) * cols;
  const std::int64_t from = stacked ? slice * rows * cols : 0;
  for (std::int64_t j = 0; j < rows * cols; ++j) {
    const std::int64_t i = from + j;
    if (dst.dtype() == DType::kFP8E4M3) {
      dst.data<fp8e4m3>()[offset + j] = fp8e4m3{std::to_integer<std::uint8_t>(t.bytes[i])};
    } else if (dst.dtype() == DType::kF32) {
      dst.data<float>()[offset + j] = stored_float(t, i);
    } else {
      dst.data<bf16>()[offset + j] = float_to_bf16(stored_float(t, i));
    }
  }
}

}  // namespace

ReferenceLayer reference_layer(const Fixture& f, int layer, int first, int count) {
  const FixtureOptions& o = f.options;
  if (count < 0) count = o.experts - first;
  const bool fp8 = o.expert_dtype == io::StDType::kF8E4M3;
  const bool mixtral = o.family == io::ModelFamily::kMixtral;
  const std::string mlp = block(o, layer);
  const std::int64_t h = o.hidden, inter = o.inter;
  const DType dtype = fp8 ? DType::kFP8E4M3 : DType::kBF16;
  // [E, 2X, H] and [E, H, X] (+ scales) for `experts` experts of intermediate size x.
  auto shaped = [&](int experts, std::int64_t x, HostTensor& w13, HostTensor& w13_scale,
                    HostTensor& w2, HostTensor& w2_scale) {
    w13 = HostTensor(dtype, {experts, 2 * x, h});
    w2 = HostTensor(dtype, {experts, h, x});
    if (!fp8) return;
    w13_scale = HostTensor(DType::kF32, {experts, 2 * x / 128, h / 128});
    w2_scale = HostTensor(DType::kF32, {experts, h / 128, x / 128});
  };
  ReferenceLayer r;
  shaped(count, inter, r.w13, r.w13_scale, r.w2, r.w2_scale);
  for (int e = 0; e < count; ++e) {
    if (o.fused) {
      place(f.tensors.at(mlp + "experts.gate_up_proj"), r.w13, e, 0, first + e);
      place(f.tensors.at(mlp + "experts.down_proj"), r.w2, e, 0, first + e);
      if (fp8) {
        place(f.tensors.at(mlp + "experts.gate_up_proj_scale_inv"), r.w13_scale, e, 0, first + e);
        place(f.tensors.at(mlp + "experts.down_proj_scale_inv"), r.w2_scale, e, 0, first + e);
      }
      continue;
    }
    const std::string expert = mlp + "experts." + std::to_string(first + e) + ".";
    const std::string gate = expert + (mixtral ? "w1" : "gate_proj") + ".weight";
    const std::string up = expert + (mixtral ? "w3" : "up_proj") + ".weight";
    const std::string down = expert + (mixtral ? "w2" : "down_proj") + ".weight";
    place(f.tensors.at(gate), r.w13, e, 0);
    place(f.tensors.at(up), r.w13, e, inter);
    place(f.tensors.at(down), r.w2, e, 0);
    if (fp8) {
      place(f.tensors.at(gate + "_scale_inv"), r.w13_scale, e, 0);
      place(f.tensors.at(up + "_scale_inv"), r.w13_scale, e, inter / 128);
      place(f.tensors.at(down + "_scale_inv"), r.w2_scale, e, 0);
    }
  }
  const StoredBytes& router = f.tensors.at(mlp + "gate.weight");
  r.router_weight = HostTensor(DType::kF32, {o.experts, h});
  for (std::int64_t i = 0; i < o.experts * h; ++i)
    r.router_weight.data<float>()[i] = stored_float(router, i);
  if (o.family == io::ModelFamily::kDeepseekV3) {
    const StoredBytes& bias = f.tensors.at(mlp + "gate.e_score_correction_bias");
    r.correction_bias = HostTensor(DType::kF32, {o.experts});
    for (int e = 0; e < o.experts; ++e) r.correction_bias.data<float>()[e] = stored_float(bias, e);
    if (o.shared_experts > 0) {
      const std::int64_t s = o.shared_experts * inter;
      shaped(1, s, r.shared_w13, r.shared_w13_scale, r.shared_w2, r.shared_w2_scale);
      const std::string p = mlp + "shared_experts.";
      place(f.tensors.at(p + "gate_proj.weight"), r.shared_w13, 0, 0);
      place(f.tensors.at(p + "up_proj.weight"), r.shared_w13, 0, s);
      place(f.tensors.at(p + "down_proj.weight"), r.shared_w2, 0, 0);
      if (fp8) {
        place(f.tensors.at(p + "gate_proj.weight_scale_inv"), r.shared_w13_scale, 0, 0);
        place(f.tensors.at(p + "up_proj.weight_scale_inv"), r.shared_w13_scale, 0, s / 128);
        place(f.tensors.at(p + "down_proj.weight_scale_inv"), r.shared_w2_scale, 0, 0);
      }
    }
  }
  return r;
}

HostTensor write_hidden_states(const fs::path& path, std::int64_t tokens, std::int64_t hidden,
                               io::StDType dtype, std::uint64_t seed, const std::string& name) {
  const StoredBytes t = random_tensor(dtype, {tokens, hidden}, 1.0f, seed, 7);
  io::write_safetensors(path, {{name, t.dtype, t.shape, t.bytes}});
  HostTensor out(DType::kBF16, {tokens, hidden});
  for (std::int64_t i = 0; i < tokens * hidden; ++i)
    out.data<bf16>()[i] = float_to_bf16(stored_float(t, i));
  return out;
}

std::vector<std::byte> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

void write_bytes(const fs::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

void write_raw_safetensors(const fs::path& path, const std::string& header, std::size_t data_size) {
  std::vector<std::byte> bytes;
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xff));
  for (char c : header) bytes.push_back(static_cast<std::byte>(c));
  bytes.resize(bytes.size() + data_size, std::byte{0});
  write_bytes(path, bytes);
}

}  // namespace moerun::test
