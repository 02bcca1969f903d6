// Small checkpoints in each family's real layout (config.json, tensor names, dtypes, shards),
// written with moerun's safetensors writer into a temporary directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun::test {

// A directory under the system temp dir, removed with its contents when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct FixtureOptions {
  io::ModelFamily family = io::ModelFamily::kQwen3Moe;
  int num_layers = 2;
  int dense_layers = 0;  // DeepSeek: first_k_dense_replace; Qwen3: the first ones, mlp_only_layers
  std::int64_t hidden = 256;
  std::int64_t inter = 128;
  int experts = 8;
  int top_k = 2;
  int groups = 1, topk_groups = 1;  // DeepSeek only
  float routed_scaling_factor = 1.0f;
  io::StDType expert_dtype = io::StDType::kBF16;  // F8_E4M3 adds weight_scale_inv
  io::StDType router_dtype = io::StDType::kBF16;
  int shards = 1;                  // > 1: model-0000k-of-0000n.safetensors + index
  bool down_back_to_back = false;  // each layer's down projections adjacent, in expert order
  // transformers 5's fused experts: mlp.experts.gate_up_proj [E, 2I, H], mlp.experts.down_proj
  // [E, H, I] (+ _scale_inv [E, 2I/128, H/128], [E, H/128, I/128]) instead of one per expert.
  bool fused = false;
  bool mixtral_mlp_block = false;        // Mixtral: model.layers.L.mlp (transformers 5), not
                                         // block_sparse_moe
  bool qwen3_num_local_experts = false;  // Qwen3: the expert count spelled as transformers 5 does
  int shared_experts = 1;                // DeepSeek: n_shared_experts (each of intermediate I)
  std::uint64_t seed = 1;
};

// A preset per family, shaped like the real model but small.
FixtureOptions deepseek_v3_options();  // FP8 + weight_scale_inv, grouped routing, 2 shards
FixtureOptions qwen3_moe_options();    // BF16, softmax top-k
FixtureOptions mixtral_options();      // BF16, block_sparse_moe names

// A fixture in one of the layouts and config spellings moerun reads, and the MoE layer to run.
struct FixtureCase {
  std::string name;  // "DeepseekV3Fp8Fused", ... (test names)
  FixtureOptions options;
  int layer = 0;
};
// Every family in each expert layout (per expert, transformers 5's fused tensors), block name
// (Mixtral's block_sparse_moe and mlp) and expert-count spelling (Qwen3's num_experts and
// num_local_experts), DeepSeek-V3 with 0, 1 and 2 shared experts.
std::vector<FixtureCase> layout_cases();
// Test output names the case, not its bytes.
inline void PrintTo(const FixtureCase& c, std::ostream* os) { *os << c.name; }

struct StoredBytes {
  io::StDType dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

struct Fixture {
  std::filesystem::path dir;
  FixtureOptions options;
  nlohmann::json config;
  std::map<std::string, StoredBytes> tensors;  // every tensor written, by name
};

Fixture write_fixture(const std::filesystem::path& dir, const FixtureOptions& options);
void write_config(const Fixture& fixture);  // rewrites config.json from fixture.config

// The layer's experts [first, first + count) packed by the test itself (not by the loader):
// w13 = [gate; up] rows, F16/F32 rounded to bf16, FP8 with weight_scale_inv as block scales; and
// the DeepSeek shared experts as one expert of intermediate size n_shared x I.
struct ReferenceLayer {
  HostTensor w13, w13_scale, w2, w2_scale, correction_bias, router_weight;  // router [E, H] f32
  HostTensor shared_w13, shared_w13_scale, shared_w2, shared_w2_scale;      // undefined: none
  MoeWeights weights() const;
  MoeWeights shared_weights() const;
};
ReferenceLayer reference_layer(const Fixture& fixture, int layer, int first = 0, int count = -1);

// A [T, H] hidden-states file, values from `seed`, in `dtype` (BF16, F16 or F32); returns the
// bf16 values the layer sees.
HostTensor write_hidden_states(const std::filesystem::path& path, std::int64_t tokens,
                               std::int64_t hidden, io::StDType dtype, std::uint64_t seed,
                               const std::string& name = "x");

// Raw file helpers for the bad-file tests.
std::vector<std::byte> read_bytes(const std::filesystem::path& path);
void write_bytes(const std::filesystem::path& path, const std::vector<std::byte>& bytes);
// A safetensors file made of this header text and `data_size` zero bytes of buffer.
void write_raw_safetensors(const std::filesystem::path& path, const std::string& header,
                           std::size_t data_size);

}  // namespace moerun::test
