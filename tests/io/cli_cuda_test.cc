// `moerun run --model DIR` on the CUDA backend against the CPU backend, in every layout and
// spelling: the same routing (the router GEMM and routing reproduce the oracle's bits), outputs
// within the layer-vs-oracle tolerance, CUDA chosen by default, EP partials that add up, bad
// values rejected (GPU; skipped without a device).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_run.h"
#include "core/metrics.h"
#include "cuda/cuda_test_util.h"
#include "fixture.h"
#include "io/safetensors.h"
#include "tensor_patch.h"
#include "tolerances.h"

namespace moerun::io {
namespace {

using test::CliResult;
using test::Fixture;
using test::q;
using test::run_cli;
using test::TempDir;

struct Outputs {
  nlohmann::json cuda, cpu;
};

// Runs `args` on both backends, writing cuda.safetensors and cpu.safetensors into `dir`, and
// compares them: routing exact (weights within one float ulp), hidden states within `tolerance`.
Outputs compare_backends(const TempDir& dir, const std::string& args, double tolerance) {
  Outputs o;
  for (const char* backend : {"cuda", "cpu"}) {
    const CliResult r =
        run_cli(args + " --backend " + backend + " --save-routing --json --output " +
                    q(dir / (std::string(backend) + ".safetensors")),
                true);
    EXPECT_EQ(r.exit_code, 0) << backend << ": " << r.output;
    (backend == std::string("cuda") ? o.cuda : o.cpu) = nlohmann::json::parse(r.output);
  }
  const SafetensorsFile cuda(dir / "cuda.safetensors"), cpu(dir / "cpu.safetensors");
  const TensorView ids_gpu = *cuda.view(cuda.at("topk_ids")),
                   ids_cpu = *cpu.view(cpu.at("topk_ids"));
  EXPECT_EQ(std::memcmp(ids_gpu.data(), ids_cpu.data(), ids_cpu.nbytes()), 0) << "topk_ids";
  const TensorView w_gpu = *cuda.view(cuda.at("topk_weights")),
                   w_cpu = *cpu.view(cpu.at("topk_weights"));
  std::int64_t weight_mismatches = 0;
  for (std::int64_t i = 0; i < w_cpu.numel(); ++i) {
    weight_mismatches +=
        !test::within_one_ulp(w_gpu.data_as<const float>()[i], w_cpu.data_as<const float>()[i]);
  }
  EXPECT_EQ(weight_mismatches, 0) << "topk_weights";
  const TensorView out_gpu = *cuda.view(cuda.at("hidden_states")),
                   out_cpu = *cpu.view(cpu.at("hidden_states"));
  EXPECT_LE(relative_error(out_gpu, out_cpu), tolerance);
  return o;
}

double tolerance_for(const test::FixtureOptions& o) {
  return o.expert_dtype == StDType::kF8E4M3 ? test::kLayerVsOracleFp8 : test::kLayerVsOracleBf16;
}

class RunCuda : public ::testing::TestWithParam<test::FixtureCase> {};

TEST_P(RunCuda, MatchesTheCpuBackend) {
  MOERUN_REQUIRE_GPU();
  const test::FixtureCase& c = GetParam();
  TempDir dir;
  test::write_fixture(dir / "model", c.options);
  const std::uint64_t seed = test::fresh_seed();
  // 40 tokens: the masked layout; 300: the contiguous one.
  for (const int tokens : {40, 300}) {
    SCOPED_TRACE(std::to_string(tokens) + " tokens");
    const Outputs o =
        compare_backends(dir,
                         "run --model " + q(dir / "model") + " --layer " + std::to_string(c.layer) +
                             " --tokens " + std::to_string(tokens) + " --seed " +
                             std::to_string(seed % 1000000) + " --reference full",
                         tolerance_for(c.options));
    EXPECT_EQ(o.cuda.at("backend"), "cuda");
    EXPECT_TRUE(o.cuda.at("ok").get<bool>()) << o.cuda.dump();
    EXPECT_GT(o.cuda.at("load").at("uploaded_bytes").get<std::uint64_t>(), 0u);
    EXPECT_EQ(o.cuda.at("experts_layout"), o.cpu.at("experts_layout"));
    EXPECT_EQ(o.cuda.at("shared_experts"), o.cpu.at("shared_experts"));
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, RunCuda, ::testing::ValuesIn(test::layout_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(RunCuda, AutoPicksCudaAndSaysWhy) {
  MOERUN_REQUIRE_GPU();
  TempDir dir;
  test::write_fixture(dir / "model", test::qwen3_moe_options());
  const CliResult r = run_cli("run --model " + q(dir / "model") + " --tokens 8 --json", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("backend"), "cuda");
  EXPECT_TRUE(j.at("backend_reason").get<std::string>().starts_with("auto: ")) << r.output;
  EXPECT_FALSE(j.contains("cuda")) << "no reason against CUDA when it runs";
}

TEST(RunCuda, ExpertParallelAndQuantizedRuns) {
  MOERUN_REQUIRE_GPU();
  TempDir dir;
  test::write_fixture(dir / "model", test::deepseek_v3_options());
  const std::string run = "run --model " + q(dir / "model") + " --layer 2 --tokens 50";
  compare_backends(dir, run + " --ep-size 4", test::kLayerVsOracleFp8);
  // The ranks' f32 partials (rank 0 with the shared experts) add up to the whole layer.
  const CliResult all =
      run_cli(run + " --ep-size 2 --backend cuda --output " + q(dir / "all.safetensors"));
  ASSERT_EQ(all.exit_code, 0) << all.output;
  std::vector<float> sum(50 * 256, 0.0f);
  for (int rank = 0; rank < 2; ++rank) {
    const auto path = dir / ("rank" + std::to_string(rank) + ".safetensors");
    const CliResult r = run_cli(run + " --ep-size 2 --backend cuda --ep-rank " +
                                std::to_string(rank) + " --output " + q(path));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const SafetensorsFile y(path);
    const TensorView partial = *y.view(y.at("hidden_states"));
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += partial.data_as<const float>()[i];
  }
  const SafetensorsFile y(dir / "all.safetensors");
  const TensorView out = *y.view(y.at("hidden_states"));
  for (std::size_t i = 0; i < sum.size(); ++i) {
    ASSERT_EQ(out.data_as<const bf16>()[i].bits, float_to_bf16(sum[i]).bits) << i;
  }

  TempDir qdir;
  auto o = test::qwen3_moe_options();
  o.hidden = 256;
  o.inter = 128;
  test::write_fixture(qdir / "model", o);
  const Outputs quantized = compare_backends(
      qdir, "run --model " + q(qdir / "model") + " --tokens 30 --quantize fp8 --reference full",
      test::kLayerVsOracleFp8);
  EXPECT_NE(quantized.cuda.at("config").get<std::string>().find("fp8_e4m3"), std::string::npos);
}

// Bad values on the CUDA backend, exit 2 and nothing written: the router weight is checked on the
// host as loaded (file, tensor, element), the experts, which only the device holds, by the layer
// when it is built (moerun's packed tensor and element).
TEST(RunCuda, BadValuesAreRejectedNamingTheTensor) {
  MOERUN_REQUIRE_GPU();
  auto expect_rejected = [](const TempDir& dir, const std::string& message) {
    const CliResult r = run_cli("run --model " + q(dir / "model") + " --tokens 8 --backend cuda " +
                                "--output " + q(dir / "y.safetensors"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << "expected: " << message << "\n"
                                                         << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "y.safetensors")) << "nothing may be written";
  };
  TempDir scale_dir;
  test::write_fixture(scale_dir / "model", test::deepseek_v3_options());
  // gate_proj's scales are w13_scale's first rows: [0, 1] of expert 3 is w13_scale[3, 0, 1].
  test::overwrite_f32(scale_dir / "model",
                      "model.layers.1.mlp.experts.3.gate_proj.weight_scale_inv", 1, -0.5f);
  expect_rejected(scale_dir,
                  "invalid w13_scale[3, 0, 1]: expected a finite value > 0 (an FP8 block scale), "
                  "got -0.5");

  TempDir router_dir;
  const Fixture f = test::write_fixture(router_dir / "model", test::qwen3_moe_options());
  const std::string name = "model.layers.0.mlp.gate.weight";
  const std::uint16_t inf_bf16 = 0x7f80;
  test::overwrite_element(router_dir / "model", name, f.options.hidden + 1, &inf_bf16, 2);
  expect_rejected(router_dir, "invalid element [1, 1] of '" + name + "' in ");
}

}  // namespace
}  // namespace moerun::io
