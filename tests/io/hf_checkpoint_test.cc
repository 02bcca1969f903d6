// Checkpoint directories: tensor names per family, and every disagreement with config.json (or a
// missing tensor or shard) rejected with a message naming the file and the tensor.
#include "io/hf_checkpoint.h"

#include <gtest/gtest.h>

#include <fstream>

#include "fixture.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun::io {
namespace {

using test::Fixture;
using test::TempDir;

using test::error_of;

// Rewrites an unsharded fixture's model.safetensors with `replace` applied to its tensors.
template <class Edit>
void rewrite_single_file(Fixture& f, Edit&& edit) {
  edit(f.tensors);
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, t] : f.tensors) tensors.push_back({name, t.dtype, t.shape, t.bytes});
  write_safetensors(f.dir / "model.safetensors", tensors);
}

TEST(HfCheckpoint, NamesPerFamily) {
  const MoeLayerNames d = moe_layer_names(ModelFamily::kDeepseekV3, 3);
  EXPECT_EQ(d.router, "model.layers.3.mlp.gate.weight");
  EXPECT_EQ(d.router_bias, "model.layers.3.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(d.gate(7), "model.layers.3.mlp.experts.7.gate_proj.weight");
  EXPECT_EQ(d.up(7), "model.layers.3.mlp.experts.7.up_proj.weight");
  EXPECT_EQ(scale_name(d.down(0)), "model.layers.3.mlp.experts.0.down_proj.weight_scale_inv");
  const MoeLayerNames q = moe_layer_names(ModelFamily::kQwen3Moe, 0);
  EXPECT_EQ(q.router, "model.layers.0.mlp.gate.weight");
  EXPECT_TRUE(q.router_bias.empty());
  EXPECT_EQ(q.down(1), "model.layers.0.mlp.experts.1.down_proj.weight");
  const MoeLayerNames m = moe_layer_names(ModelFamily::kMixtral, 31);
  EXPECT_EQ(m.router, "model.layers.31.block_sparse_moe.gate.weight");
  EXPECT_EQ(m.gate(2), "model.layers.31.block_sparse_moe.experts.2.w1.weight");
  EXPECT_EQ(m.up(2), "model.layers.31.block_sparse_moe.experts.2.w3.weight");
  EXPECT_EQ(m.down(2), "model.layers.31.block_sparse_moe.experts.2.w2.weight");
}

TEST(HfCheckpoint, NamesOfTransformers5) {
  const MoeLayerNames m = moe_layer_names(ModelFamily::kMixtral, 4, ExpertLayout::kFused, "mlp");
  EXPECT_EQ(m.router, "model.layers.4.mlp.gate.weight");
  EXPECT_EQ(m.gate_up(), "model.layers.4.mlp.experts.gate_up_proj");
  EXPECT_EQ(m.down_fused(), "model.layers.4.mlp.experts.down_proj");
  EXPECT_EQ(scale_name(m.gate_up()), "model.layers.4.mlp.experts.gate_up_proj_scale_inv");
  const MoeLayerNames d = moe_layer_names(ModelFamily::kDeepseekV3, 3);
  EXPECT_EQ(d.shared("down_proj"), "model.layers.3.mlp.shared_experts.down_proj.weight");
}

// The layout and block of each layer are found in the files, whatever wrote them.
TEST(HfCheckpoint, FindsEachLayoutAndBlock) {
  for (const test::FixtureCase& c : test::layout_cases()) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    test::write_fixture(dir.path(), c.options);
    const HfCheckpoint ckpt(dir.path());
    const MoeLayerNames n = ckpt.names(c.layer);
    EXPECT_EQ(n.layout, c.options.fused ? ExpertLayout::kFused : ExpertLayout::kPerExpert);
    const bool old_block =
        c.options.family == ModelFamily::kMixtral && !c.options.mixtral_mlp_block;
    EXPECT_EQ(n.prefix, "model.layers." + std::to_string(c.layer) +
                            (old_block ? ".block_sparse_moe." : ".mlp."));
    EXPECT_NO_THROW(ckpt.inspect_moe_layer(c.layer));
  }
}

TEST(HfCheckpointBad, BothLayoutsInOneLayer) {
  TempDir dir;
  auto o = test::qwen3_moe_options();
  o.fused = true;
  Fixture f = test::write_fixture(dir.path(), o);
  rewrite_single_file(f, [](auto& tensors) {
    tensors["model.layers.1.mlp.experts.0.gate_proj.weight"] =
        tensors.at("model.layers.1.mlp.gate.weight");
  });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(1); });
  EXPECT_CONTAINS(m,
                  "layer 1 holds its experts twice, fused ('model.layers.1.mlp.experts."
                  "gate_up_proj') and per expert ('model.layers.1.mlp.experts.0.gate_proj."
                  "weight'); expected one layout");
}

TEST(HfCheckpointBad, TransposedFusedExperts) {
  TempDir dir;
  auto o = test::qwen3_moe_options();  // H 128, I 64: [E, H, 2I] is [8, 128, 128] == [E, 2I, H]
  o.inter = 96;
  o.fused = true;
  Fixture f = test::write_fixture(dir.path(), o);
  rewrite_single_file(f, [](auto& tensors) {
    auto& t = tensors.at("model.layers.0.mlp.experts.gate_up_proj");
    t.shape = {t.shape[0], t.shape[2], t.shape[1]};
  });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(m, "invalid shape of tensor 'model.layers.0.mlp.experts.gate_up_proj'");
  EXPECT_CONTAINS(m,
                  "expected [E, 2I, H] (each expert out_features x in_features, as "
                  "transformers 5 writes it), got [8, 128, 192], the transposed orientation");
}

TEST(HfCheckpointBad, FusedShapeDisagreesWithConfig) {
  TempDir dir;
  auto o = test::mixtral_options();
  o.fused = true;
  o.mixtral_mlp_block = true;
  Fixture f = test::write_fixture(dir.path(), o);
  f.config["intermediate_size"] = 64;
  test::write_config(f);
  const std::string m = error_of([&] { HfCheckpoint(dir.path()).inspect_moe_layer(0); });
  EXPECT_CONTAINS(m, "invalid shape of tensor 'model.layers.0.mlp.experts.gate_up_proj'");
  EXPECT_CONTAINS(m,
                  "expected [4, 128, 64] (experts 4, 2 x intermediate_size 64, hidden_size 64 "
                  "from config.json), got [4, 192, 64]");
}

// DeepSeek-V3's shared experts are computed; a checkpoint whose config promises them (or leaves
// n_shared_experts to transformers' default of 1) must hold them.
TEST(HfCheckpointBad, SharedExpertsMissing) {
  TempDir dir;
  auto o = test::deepseek_v3_options();
  o.shared_experts = 0;
  o.shards = 1;
  Fixture f = test::write_fixture(dir.path(), o);
  f.config.erase("n_shared_experts");
  test::write_config(f);
  const std::string m = error_of([&] { HfCheckpoint(dir.path()).inspect_moe_layer(1); });
  EXPECT_CONTAINS(m, "missing tensor 'model.layers.1.mlp.shared_experts.gate_proj.weight'");
  EXPECT_CONTAINS(m, "(n_shared_experts is absent; transformers' default is 1)");
  EXPECT_CONTAINS(m, "a checkpoint without them needs \"n_shared_experts\": 0");
}

TEST(HfCheckpointBad, SharedExpertShapeDisagrees) {
  TempDir dir;
  auto o = test::deepseek_v3_options();
  o.shards = 1;
  Fixture f = test::write_fixture(dir.path(), o);
  f.config["n_shared_experts"] = 2;
  test::write_config(f);
  const std::string m = error_of([&] { HfCheckpoint(dir.path()).inspect_moe_layer(1); });
  EXPECT_CONTAINS(m,
                  "invalid shape of tensor 'model.layers.1.mlp.shared_experts.gate_proj.weight'");
  EXPECT_CONTAINS(m,
                  "expected [256, 256] (n_shared_experts 2 x moe_intermediate_size 128, "
                  "hidden_size 256 from config.json), got [128, 256]");
}

TEST(HfCheckpoint, InspectsDeepseekV3ShardedFp8) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir.path(), test::deepseek_v3_options());
  const HfCheckpoint ckpt(dir.path());
  EXPECT_TRUE(ckpt.store().sharded());
  EXPECT_EQ(ckpt.store().files().size(), 2u);
  const MoeLayerInfo info = ckpt.inspect_moe_layer(1);
  EXPECT_EQ(info.expert_dtype, StDType::kF8E4M3);
  EXPECT_TRUE(info.fp8_scales);
  EXPECT_EQ(info.router_dtype, StDType::kBF16);
  ASSERT_TRUE(info.bias_dtype.has_value());
  EXPECT_EQ(*info.bias_dtype, StDType::kF32);
  EXPECT_TRUE(info.shared_experts);
  const auto& o = f.options;
  // Routed experts and the one shared expert (n_shared_experts 1, intermediate I).
  EXPECT_EQ(info.expert_bytes,
            static_cast<std::uint64_t>((o.experts + 1) * 3 * o.hidden * o.inter));
  EXPECT_EQ(info.scale_bytes, static_cast<std::uint64_t>((o.experts + 1) * 4 * (2 + 2 + 2)));
  EXPECT_EQ(info.router_bytes,
            static_cast<std::uint64_t>(o.experts * o.hidden * 2 + o.experts * 4));
}

TEST(HfCheckpoint, DenseLayerIsReportedNotMisread) {
  TempDir dir;
  test::write_fixture(dir.path(), test::deepseek_v3_options());
  const HfCheckpoint ckpt(dir.path());
  EXPECT_FALSE(ckpt.config().is_moe_layer(0));
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(
      m, "layer 0 is dense (first_k_dense_replace = 1), not an MoE layer; MoE layers: 1, 2");
}

TEST(HfCheckpoint, LayerOutOfRange) {
  TempDir dir;
  test::write_fixture(dir.path(), test::qwen3_moe_options());
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(2); });
  EXPECT_CONTAINS(m, "invalid layer: expected 0 <= layer < num_hidden_layers (2), got 2");
}

TEST(HfCheckpointBad, ShapeDisagreesWithConfig) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::qwen3_moe_options());
  f.config["moe_intermediate_size"] = 32;
  test::write_config(f);
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(m, "invalid shape of tensor 'model.layers.0.mlp.experts.0.gate_proj.weight' in " +
                         (dir / "model.safetensors").string() +
                         ": expected [32, 128] (moe_intermediate_size 32 x hidden_size 128 from "
                         "config.json), got [64, 128]");
}

TEST(HfCheckpointBad, RouterShapeDisagreesWithConfig) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::mixtral_options());
  f.config["num_local_experts"] = 2;
  test::write_config(f);
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(1); });
  EXPECT_CONTAINS(m, "invalid shape of tensor 'model.layers.1.block_sparse_moe.gate.weight'");
  EXPECT_CONTAINS(m, "expected [2, 64]");
  EXPECT_CONTAINS(m, "got [4, 64]");
}

TEST(HfCheckpointBad, Fp8WeightsWithoutQuantizationConfig) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::deepseek_v3_options());
  f.config.erase("quantization_config");
  test::write_config(f);
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(1); });
  EXPECT_CONTAINS(m, "invalid dtype of tensor 'model.layers.1.mlp.experts.0.gate_proj.weight' in");
  EXPECT_CONTAINS(
      m, "expected BF16, F16 or F32 (config.json has no quantization_config), got F8_E4M3");
}

TEST(HfCheckpointBad, Bf16WeightsWithFp8QuantizationConfig) {
  TempDir dir;
  auto o = test::qwen3_moe_options();
  o.hidden = 128;
  o.inter = 128;
  Fixture f = test::write_fixture(dir.path(), o);
  f.config["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  test::write_config(f);
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(m, "expected F8_E4M3 (config.json's quantization_config is fp8), got BF16");
}

TEST(HfCheckpointBad, MissingExpertTensor) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::qwen3_moe_options());
  rewrite_single_file(f, [](auto& t) { t.erase("model.layers.1.mlp.experts.5.up_proj.weight"); });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(1); });
  EXPECT_CONTAINS(m, (dir / "model.safetensors").string() +
                         ": missing tensor 'model.layers.1.mlp.experts.5.up_proj.weight'");
}

TEST(HfCheckpointBad, MissingScale) {
  TempDir dir;
  auto o = test::deepseek_v3_options();
  o.shards = 1;
  Fixture f = test::write_fixture(dir.path(), o);
  rewrite_single_file(
      f, [](auto& t) { t.erase("model.layers.2.mlp.experts.3.down_proj.weight_scale_inv"); });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(2); });
  EXPECT_CONTAINS(m, "missing tensor 'model.layers.2.mlp.experts.3.down_proj.weight_scale_inv'");
}

TEST(HfCheckpointBad, ScaleShapeDisagrees) {
  TempDir dir;
  auto o = test::deepseek_v3_options();
  o.shards = 1;
  Fixture f = test::write_fixture(dir.path(), o);
  rewrite_single_file(f, [](auto& t) {
    auto& s = t.at("model.layers.1.mlp.experts.0.up_proj.weight_scale_inv");
    s.shape = {2, 1};  // [1, 2] transposed: the same bytes, the wrong blocks
    s.bytes.resize(8);
  });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(1); });
  EXPECT_CONTAINS(
      m, "invalid shape of tensor 'model.layers.1.mlp.experts.0.up_proj.weight_scale_inv'");
  EXPECT_CONTAINS(m,
                  "expected [1, 2] (128x128 blocks of moe_intermediate_size 128 x hidden_size 256");
}

TEST(HfCheckpointBad, UnsupportedExpertDtype) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::mixtral_options());
  rewrite_single_file(f, [](auto& t) {
    auto& w = t.at("model.layers.0.block_sparse_moe.experts.1.w2.weight");
    w.dtype = StDType::kF64;
    w.bytes.resize(w.bytes.size() * 4);
  });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(
      m, "unsupported dtype of tensor 'model.layers.0.block_sparse_moe.experts.1.w2.weight'");
  EXPECT_CONTAINS(m, "expected BF16, F16 or F32, got F64");
}

TEST(HfCheckpointBad, UnsupportedRouterDtype) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::mixtral_options());
  rewrite_single_file(f, [](auto& t) {
    auto& w = t.at("model.layers.0.block_sparse_moe.gate.weight");
    w.dtype = StDType::kI16;
  });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(m, "unsupported dtype of tensor 'model.layers.0.block_sparse_moe.gate.weight'");
}

TEST(HfCheckpointBad, ExpertsOfMixedDtypes) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::qwen3_moe_options());
  rewrite_single_file(f, [](auto& t) {
    t.at("model.layers.0.mlp.experts.2.gate_proj.weight").dtype = StDType::kF16;
  });
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(m, "invalid dtype of tensor 'model.layers.0.mlp.experts.2.gate_proj.weight'");
  EXPECT_CONTAINS(m, "expected BF16 like the layer's other experts, got F16");
}

TEST(HfCheckpointBad, TensorMissingFromIndex) {
  TempDir dir;
  test::write_fixture(dir.path(), test::deepseek_v3_options());
  const auto index_path = dir / "model.safetensors.index.json";
  nlohmann::json index = nlohmann::json::parse(std::ifstream(index_path));
  index["weight_map"].erase("model.layers.1.mlp.gate.weight");
  std::ofstream(index_path) << index.dump();
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(1); });
  EXPECT_CONTAINS(m, index_path.string() +
                         ": missing tensor 'model.layers.1.mlp.gate.weight' (not in weight_map)");
}

TEST(HfCheckpointBad, IndexPointsToTheWrongShard) {
  TempDir dir;
  test::write_fixture(dir.path(), test::deepseek_v3_options());
  const auto index_path = dir / "model.safetensors.index.json";
  nlohmann::json index = nlohmann::json::parse(std::ifstream(index_path));
  const std::string name = "model.layers.2.mlp.experts.15.down_proj.weight";
  const std::string shard = index["weight_map"][name];
  const std::string other = shard == "model-00001-of-00002.safetensors"
                                ? "model-00002-of-00002.safetensors"
                                : "model-00001-of-00002.safetensors";
  index["weight_map"][name] = other;
  std::ofstream(index_path) << index.dump();
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(2); });
  EXPECT_CONTAINS(m, (dir / other).string() + ": missing tensor '" + name +
                         "' (model.safetensors.index.json places it in this shard)");
}

TEST(HfCheckpointBad, MissingShardFile) {
  TempDir dir;
  test::write_fixture(dir.path(), test::deepseek_v3_options());
  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(2); });
  EXPECT_CONTAINS(m, "model-00002-of-00002.safetensors: cannot open");
}

TEST(HfCheckpointBad, IndexShardOutsideTheDirectory) {
  TempDir dir;
  test::write_fixture(dir.path(), test::deepseek_v3_options());
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map": {"model.layers.1.mlp.gate.weight": "../secret.safetensors"}})";
  const std::string m = error_of([&] { HfCheckpoint ckpt(dir.path()); });
  EXPECT_CONTAINS(
      m, "weight_map entry 'model.layers.1.mlp.gate.weight' names \"../secret.safetensors\"");
}

TEST(HfCheckpointBad, MalformedIndex) {
  TempDir dir;
  test::write_fixture(dir.path(), test::deepseek_v3_options());
  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": [)";
  const std::string m = error_of([&] { HfCheckpoint ckpt(dir.path()); });
  EXPECT_CONTAINS(m, "model.safetensors.index.json: malformed JSON");
}

TEST(HfCheckpointBad, TruncatedShard) {
  TempDir dir;
  test::write_fixture(dir.path(), test::qwen3_moe_options());
  const auto path = dir / "model.safetensors";
  auto bytes = test::read_bytes(path);
  bytes.resize(bytes.size() - 100);
  test::write_bytes(path, bytes);
  const HfCheckpoint ckpt(dir.path());
  const std::string m = error_of([&] { ckpt.inspect_moe_layer(0); });
  EXPECT_CONTAINS(m, path.string() + ": tensor '");
  EXPECT_CONTAINS(m, "out of range: the data buffer has");
}

TEST(HfCheckpointBad, NoSafetensors) {
  TempDir dir;
  Fixture f = test::write_fixture(dir.path(), test::qwen3_moe_options());
  std::filesystem::remove(dir / "model.safetensors");
  const std::string m = error_of([&] { HfCheckpoint ckpt(dir.path()); });
  EXPECT_CONTAINS(m, "neither model.safetensors.index.json nor model.safetensors found");
}

TEST(HfCheckpointBad, NoConfig) {
  TempDir dir;
  const std::string m = error_of([&] { HfCheckpoint ckpt(dir.path()); });
  EXPECT_CONTAINS(m, "config.json: cannot open");
}

}  // namespace
}  // namespace moerun::io
