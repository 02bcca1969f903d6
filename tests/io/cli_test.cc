// End to end: `moerun run --model DIR` on small checkpoints of each family reproduces the CPU
// reference computed here from the same tensors, bit for bit; `moerun info` reports the layers.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "core/metrics.h"
#include "core/tolerances.h"
#include "cpu/dense_reference.h"
#include "cpu/layer.h"
#include "cpu/routing.h"
#include "fixture.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

namespace moerun::io {
namespace {

using test::CliResult;
using test::Fixture;
using test::q;
using test::run_cli;
using test::TempDir;

// The layer's output computed here: router logits in fp32 (h in order), cpu::route, then the CPU
// oracle in the masked layout, as `moerun run --layout masked` does; DeepSeek-V3's shared experts
// as a one-expert layer every token goes through with weight 1, its f32 output added to the
// routed experts' f32 output and rounded once.
struct Expected {
  HostTensor out;  // [T, H] bf16
  cpu::TopK routing;
  std::vector<double> dense;  // the fp64 dense reference
};

Expected expected_output(const Fixture& f, int layer, const HostTensor& hidden) {
  const test::ReferenceLayer ref = test::reference_layer(f, layer);
  const MoeConfig config = parse_hf_config(f.config.dump(), "config.json").moe_config();
  const std::int64_t tokens = hidden.size(0), h = config.hidden_size;
  HostTensor logits(DType::kF32, {tokens, config.num_experts});
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int e = 0; e < config.num_experts; ++e) {
      float acc = 0.0f;
      for (std::int64_t c = 0; c < h; ++c) {
        acc += bf16_to_float(hidden.data<bf16>()[t * h + c]) *
               ref.router_weight.data<float>()[e * h + c];
      }
      logits.data<float>()[t * config.num_experts + e] = acc;
    }
  }
  Expected x{
      HostTensor(DType::kBF16, {tokens, h}),
      cpu::route(config.routing, config.num_experts, logits.view(), ref.correction_bias.view()),
      {}};
  x.dense = cpu::dense_reference(config, ref.weights(), hidden.view(), x.routing.ids.view(),
                                 x.routing.weights.view());
  if (!ref.shared_w13.defined()) {
    cpu::moe_forward(config, ref.weights(), hidden.view(), x.routing.ids.view(),
                     x.routing.weights.view(), x.out.view(), {Layout::kMasked});
    return x;
  }
  MoeConfig shared;
  shared.hidden_size = h;
  shared.intermediate_size = ref.shared_w13.size(1) / 2;
  shared.num_experts = 1;
  shared.routing.top_k = 1;
  shared.weight_dtype = config.weight_dtype;
  HostTensor ids(DType::kI32, {tokens, 1}), ones(DType::kF32, {tokens, 1});
  std::fill(ids.data<int>(), ids.data<int>() + tokens, 0);
  std::fill(ones.data<float>(), ones.data<float>() + tokens, 1.0f);
  HostTensor routed(DType::kF32, {tokens, h}), shared_out(DType::kF32, {tokens, h});
  cpu::moe_forward(config, ref.weights(), hidden.view(), x.routing.ids.view(),
                   x.routing.weights.view(), routed.view(), {Layout::kMasked});
  cpu::moe_forward(shared, ref.shared_weights(), hidden.view(), ids.view(), ones.view(),
                   shared_out.view(), {Layout::kMasked});
  for (std::int64_t i = 0; i < tokens * h; ++i) {
    x.out.data<bf16>()[i] = float_to_bf16(routed.data<float>()[i] + shared_out.data<float>()[i]);
  }
  const std::vector<double> dense_shared =
      cpu::dense_reference(shared, ref.shared_weights(), hidden.view(), ids.view(), ones.view());
  for (std::size_t i = 0; i < x.dense.size(); ++i) x.dense[i] += dense_shared[i];
  return x;
}

void expect_same(const TensorView& actual, const TensorView& expected, const char* what) {
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  EXPECT_EQ(std::memcmp(actual.data(), expected.data(), expected.nbytes()), 0) << what;
}

struct Case {
  const char* name;
  test::FixtureOptions (*options)();
  int layer;
  StDType input_dtype;
};
// Test names print the case, not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class RunModel : public ::testing::TestWithParam<Case> {};

TEST_P(RunModel, ReproducesTheCpuReference) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir / "model", GetParam().options());
  const HostTensor hidden = test::write_hidden_states(dir / "x.safetensors", 20, f.options.hidden,
                                                      GetParam().input_dtype, 3);
  const CliResult r =
      run_cli("run --model " + q(dir / "model") + " --layer " + std::to_string(GetParam().layer) +
              " --input " + q(dir / "x.safetensors") + " --output " + q(dir / "y.safetensors") +
              " --save-routing --layout masked --backend cpu --check");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const Expected x = expected_output(f, GetParam().layer, hidden);
  const SafetensorsFile y(dir / "y.safetensors");
  expect_same(*y.view(y.at("hidden_states")), x.out.view(), "hidden_states");
  expect_same(*y.view(y.at("topk_ids")), x.routing.ids.view(), "topk_ids");
  expect_same(*y.view(y.at("topk_weights")), x.routing.weights.view(), "topk_weights");
  const double error = relative_error(*y.view(y.at("hidden_states")), x.dense);
  const DType dtype = f.options.expert_dtype == StDType::kF8E4M3 ? DType::kFP8E4M3 : DType::kBF16;
  EXPECT_LT(error, layer_tolerance(dtype));
}

INSTANTIATE_TEST_SUITE_P(
    Families, RunModel,
    ::testing::Values(Case{"DeepseekV3Fp8Sharded", test::deepseek_v3_options, 1, StDType::kBF16},
                      Case{"Qwen3MoeBf16", test::qwen3_moe_options, 1, StDType::kF32},
                      Case{"MixtralBf16", test::mixtral_options, 0, StDType::kF16}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

class RunLayout : public ::testing::TestWithParam<test::FixtureCase> {};

// Every layout and spelling, end to end on the CPU backend: bit for bit the oracle's output,
// shared experts included, and the JSON says what ran and why.
TEST_P(RunLayout, ReproducesTheCpuReference) {
  TempDir dir;
  const test::FixtureCase& c = GetParam();
  const Fixture f = test::write_fixture(dir / "model", c.options);
  const HostTensor hidden =
      test::write_hidden_states(dir / "x.safetensors", 13, f.options.hidden, StDType::kBF16, 4);
  const CliResult r =
      run_cli("run --model " + q(dir / "model") + " --layer " + std::to_string(c.layer) +
                  " --input " + q(dir / "x.safetensors") + " --output " + q(dir / "y.safetensors") +
                  " --layout masked --backend cpu --reference full --json",
              true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  const Expected x = expected_output(f, c.layer, hidden);
  const SafetensorsFile y(dir / "y.safetensors");
  expect_same(*y.view(y.at("hidden_states")), x.out.view(), "hidden_states");
  EXPECT_EQ(j.at("experts_layout"), c.options.fused ? "fused" : "per-expert");
  const bool shared = c.options.family == ModelFamily::kDeepseekV3 && c.options.shared_experts > 0;
  EXPECT_EQ(j.at("shared_experts").get<int>(), shared ? c.options.shared_experts : 0);
  EXPECT_EQ(j.at("backend"), "cpu");
  EXPECT_EQ(j.at("backend_reason"), "--backend cpu");
  EXPECT_EQ(j.at("reference").at("rows").get<int>(), 13);
  EXPECT_TRUE(j.at("ok").get<bool>());
  EXPECT_GT(j.at("tokens_per_s").get<double>(), 0.0);
  const DType dtype = f.options.expert_dtype == StDType::kF8E4M3 ? DType::kFP8E4M3 : DType::kBF16;
  EXPECT_LT(relative_error(*y.view(y.at("hidden_states")), x.dense), layer_tolerance(dtype));
}

INSTANTIATE_TEST_SUITE_P(Layouts, RunLayout, ::testing::ValuesIn(test::layout_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

// A config.json as transformers writes it (keys equal to the defaults left out) routes as
// transformers does: n_group 8, topk_group 4, scaling 2.5, renormalized.
TEST(RunModel, ConfigWithoutDefaultKeysRoutesAsTransformers) {
  TempDir dir;
  Fixture f = test::write_fixture(dir / "model", test::deepseek_v3_options());
  for (const char* key :
       {"n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob", "n_shared_experts"})
    f.config.erase(key);
  test::write_config(f);
  const HostTensor hidden =
      test::write_hidden_states(dir / "x.safetensors", 11, f.options.hidden, StDType::kBF16, 9);
  const CliResult r =
      run_cli("run --model " + q(dir / "model") + " --layer 1 --input " + q(dir / "x.safetensors") +
                  " --output " + q(dir / "y.safetensors") +
                  " --save-routing --layout masked "
                  "--backend cpu --json",
              true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  const auto defaults = j.at("config_defaults").get<std::vector<std::string>>();
  for (const char* d : {"n_group = 8", "topk_group = 4", "routed_scaling_factor = 2.5",
                        "norm_topk_prob = true", "n_shared_experts = 1"}) {
    EXPECT_NE(std::find(defaults.begin(), defaults.end(), d), defaults.end()) << d;
  }
  EXPECT_NE(j.at("config").get<std::string>().find("grouped top-k (8 groups, top 4, scale 2.5)"),
            std::string::npos);
  const Expected x = expected_output(f, 1, hidden);
  const SafetensorsFile y(dir / "y.safetensors");
  expect_same(*y.view(y.at("topk_ids")), x.routing.ids.view(), "topk_ids");
  expect_same(*y.view(y.at("hidden_states")), x.out.view(), "hidden_states");
}

TEST(RunModel, ReferenceIsSampledByDefaultAndCanBeFullOrNone) {
  TempDir dir;
  test::write_fixture(dir / "model", test::qwen3_moe_options());
  const std::string run = "run --model " + q(dir / "model") + " --tokens 40 --json ";
  auto rows = [&](const std::string& extra) {
    const CliResult r = run_cli(run + extra, true);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const auto j = nlohmann::json::parse(r.output);
    EXPECT_EQ(j.contains("relative_error"), j.at("reference").at("rows").get<int>() > 0);
    return j.at("reference").at("rows").get<int>();
  };
  EXPECT_EQ(rows(""), 16);
  EXPECT_EQ(rows("--reference full"), 40);
  EXPECT_EQ(rows("--check"), 40);
  EXPECT_EQ(rows("--reference none"), 0);
  EXPECT_EQ(rows("--ep-size 2 --ep-rank 1"), 0) << "a rank alone has no reference";
  const CliResult both = run_cli(run + "--check --reference sampled");
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.output.find("invalid --check: expected alone or with --reference full"),
            std::string::npos)
      << both.output;
  const CliResult rank = run_cli(run + "--ep-size 2 --ep-rank 0 --reference sampled");
  EXPECT_EQ(rank.exit_code, 2);
  EXPECT_NE(rank.output.find("invalid --reference: expected none with --ep-rank"),
            std::string::npos)
      << rank.output;
}

// With no usable device, auto says why not CUDA, and --backend cuda fails with the reason.
TEST(RunModel, BackendChoiceIsReported) {
  TempDir dir;
  test::write_fixture(dir / "model", test::mixtral_options());
  // CUDA_VISIBLE_DEVICES=-1 hides every GPU, so that GPU machines test this path too.
  const std::string hide = "CUDA_VISIBLE_DEVICES=-1 ";
  const std::string run = "run --model " + q(dir / "model") + " --tokens 4 ";
  const CliResult r = run_cli(run + "--json", true, hide);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("backend"), "cpu");
  EXPECT_TRUE(j.at("backend_reason").get<std::string>().starts_with("auto: ")) << r.output;
  EXPECT_FALSE(j.at("cuda").get<std::string>().empty());
  const CliResult cuda = run_cli(run + "--backend cuda", false, hide);
  EXPECT_EQ(cuda.exit_code, 3) << cuda.output;
  EXPECT_NE(cuda.output.find("backend cuda: "), std::string::npos) << cuda.output;
}

TEST(RunModel, ExpertParallelRanksSumToTheLayer) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir / "model", test::deepseek_v3_options());
  test::write_hidden_states(dir / "x.safetensors", 9, f.options.hidden, StDType::kBF16, 5);
  const std::string common = "run --model " + q(dir / "model") + " --layer 2 --input " +
                             q(dir / "x.safetensors") + " --ep-size 2 --layout masked";
  const CliResult all = run_cli(common + " --output " + q(dir / "all.safetensors"));
  ASSERT_EQ(all.exit_code, 0) << all.output;
  std::vector<float> sum(9 * 256, 0.0f);
  for (int rank = 0; rank < 2; ++rank) {
    const auto path = dir / ("rank" + std::to_string(rank) + ".safetensors");
    const CliResult r =
        run_cli(common + " --ep-rank " + std::to_string(rank) + " --output " + q(path));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const SafetensorsFile y(path);
    const TensorView partial = *y.view(y.at("hidden_states"));
    ASSERT_EQ(partial.dtype(), DType::kF32) << "a rank writes its f32 partial sum";
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += partial.data_as<const float>()[i];
  }
  const SafetensorsFile y(dir / "all.safetensors");
  const TensorView out = *y.view(y.at("hidden_states"));
  for (std::size_t i = 0; i < sum.size(); ++i) {
    ASSERT_EQ(out.data_as<const bf16>()[i].bits, float_to_bf16(sum[i]).bits) << i;
  }
}

TEST(RunModel, QuantizeFp8OnLoadStaysWithinTheFp8Tolerance) {
  TempDir dir;
  auto o = test::qwen3_moe_options();
  o.hidden = 256;
  o.inter = 128;
  test::write_fixture(dir / "model", o);
  const CliResult r = run_cli(
      "run --model " + q(dir / "model") + " --tokens 16 --quantize fp8 --check --json", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_TRUE(j.at("ok").get<bool>());
  EXPECT_LT(j.at("quantization_error").at("w13").get<double>(), 5e-2);
  EXPECT_NE(j.at("config").get<std::string>().find("fp8_e4m3"), std::string::npos);
}

TEST(RunModelBad, DenseLayer) {
  TempDir dir;
  test::write_fixture(dir / "model", test::deepseek_v3_options());
  const CliResult r = run_cli("run --model " + q(dir / "model") + " --layer 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("layer 0 is dense (first_k_dense_replace = 1)"), std::string::npos)
      << r.output;
}

TEST(RunModelBad, InputWithTwoTensors) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir / "model", test::mixtral_options());
  const std::vector<std::byte> bytes(2 * 64 * 2);
  write_safetensors(dir / "x.safetensors",
                    {{"a", StDType::kBF16, {2, 64}, bytes}, {"b", StDType::kBF16, {2, 64}, bytes}});
  const CliResult r =
      run_cli("run --model " + q(dir / "model") + " --input " + q(dir / "x.safetensors"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("expected exactly one [T, H] tensor, got 2 tensors ('a', 'b')"),
            std::string::npos)
      << r.output;
}

TEST(RunModelBad, InputOfTheWrongWidth) {
  TempDir dir;
  test::write_fixture(dir / "model", test::mixtral_options());
  test::write_hidden_states(dir / "x.safetensors", 3, 32, StDType::kBF16, 1, "hidden");
  const CliResult r =
      run_cli("run --model " + q(dir / "model") + " --input " + q(dir / "x.safetensors"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(
      r.output.find("invalid shape of tensor 'hidden' in " + (dir / "x.safetensors").string() +
                    ": expected [T, 64] (hidden_size from config.json), got [3, 32]"),
      std::string::npos)
      << r.output;
}

TEST(RunModelBad, TruncatedCheckpoint) {
  TempDir dir;
  test::write_fixture(dir / "model", test::qwen3_moe_options());
  const auto path = dir / "model" / "model.safetensors";
  auto bytes = test::read_bytes(path);
  bytes.resize(bytes.size() / 2);
  test::write_bytes(path, bytes);
  const CliResult r = run_cli("run --model " + q(dir / "model"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(path.string() + ": tensor '"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(truncated file?)"), std::string::npos) << r.output;
}

TEST(RunModelBad, UnknownModel) {
  const CliResult r = run_cli("run --model /nonexistent/dir");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("neither a preset"), std::string::npos) << r.output;
}

TEST(RunPreset, StillRunsAndRejectsCheckpointOptions) {
  const CliResult ok = run_cli("run --model small --tokens 4 --json", true);
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(nlohmann::json::parse(ok.output).at("ok").get<bool>());
  const CliResult bad = run_cli("run --model small --tokens 4 --layer 3");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("only with --model DIR"), std::string::npos) << bad.output;
}

TEST(Info, ListsMoeAndDenseLayersWithDtypesAndBytes) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir / "model", test::deepseek_v3_options());
  const CliResult r = run_cli("info --model " + q(dir / "model") + " --json", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("model_type"), "deepseek_v3");
  EXPECT_EQ(j.at("n_shared_experts"), 1);
  EXPECT_EQ(j.at("shapes").at("router"), nlohmann::json::array({16, 256}));
  EXPECT_EQ(j.at("shapes").at("gate_up"), nlohmann::json::array({128, 256}));
  EXPECT_EQ(j.at("shapes").at("down"), nlohmann::json::array({256, 128}));
  EXPECT_EQ(j.at("shapes").at("down_scale_inv"), nlohmann::json::array({2, 1}));
  ASSERT_EQ(j.at("layers").size(), 3u);
  EXPECT_EQ(j.at("layers")[0].at("kind"), "dense");
  EXPECT_EQ(j.at("layers")[0].at("reason"), "first_k_dense_replace = 1");
  const auto& l1 = j.at("layers")[1];
  EXPECT_EQ(l1.at("kind"), "moe");
  EXPECT_EQ(l1.at("expert_dtype"), "F8_E4M3");
  EXPECT_EQ(l1.at("router_dtype"), "BF16");
  EXPECT_EQ(l1.at("bias_dtype"), "F32");
  EXPECT_TRUE(l1.at("shared_experts").get<bool>());
  // The layer's bytes are those of its router, bias, experts (shared ones too) and their scales.
  std::uint64_t bytes = 0;
  for (const auto& [name, t] : f.tensors) {
    if (name.starts_with("model.layers.1.mlp.")) bytes += t.bytes.size();
  }
  EXPECT_EQ(l1.at("bytes").get<std::uint64_t>(), bytes);

  const CliResult text = run_cli("info --model " + q(dir / "model"));
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("computed and added to the routed output"), std::string::npos)
      << text.output;
}

TEST(Info, BenchLoadReportsThroughput) {
  TempDir dir;
  auto o = test::qwen3_moe_options();
  o.down_back_to_back = true;
  test::write_fixture(dir / "model", o);
  const CliResult r =
      run_cli("info --model " + q(dir / "model") + " --bench-load --repeat 2 --json", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto b = nlohmann::json::parse(r.output).at("bench_load");
  EXPECT_GT(b.at("load_gb_per_s").get<double>(), 0.0);
  EXPECT_GT(b.at("load_and_read_gb_per_s").get<double>(), 0.0);
  EXPECT_GT(b.at("mapped_bytes").get<std::uint64_t>(), 0u) << "w2 is zero-copy here";
}

}  // namespace
}  // namespace moerun::io
