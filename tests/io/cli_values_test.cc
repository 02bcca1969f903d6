// `moerun run --model DIR` on non-finite values: NaN or infinite weights, FP8 block scales that
// are not finite and > 0, NaN hidden states, and hidden states that overflow the layer are each
// rejected with exit code 2 and a message naming the file, the tensor and the element; nothing is
// written. On the CPU backend, whose loader reads every value (the CUDA backend's messages are
// checked in cli_cuda_test.cc).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "cli_run.h"
#include "fixture.h"
#include "io/safetensors.h"
#include "tensor_patch.h"

namespace moerun::io {
namespace {

namespace fs = std::filesystem;
using test::CliResult;
using test::q;
using test::run_cli;
using test::TempDir;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::string run_args(const TempDir& dir) {
  return "run --model " + q(dir / "model") + " --input " + q(dir / "x.safetensors") + " --output " +
         q(dir / "y.safetensors") + " --backend cpu";
}

void expect_rejected(const CliResult& r, const TempDir& dir, const std::string& message) {
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(message), std::string::npos) << "expected: " << message << "\n"
                                                       << r.output;
  EXPECT_FALSE(fs::exists(dir / "y.safetensors")) << "nothing may be written";
}

class BadScale : public ::testing::TestWithParam<float> {};

TEST_P(BadScale, IsRejectedAtLoadNamingFileTensorAndElement) {
  TempDir dir;
  const test::Fixture f = test::write_fixture(dir / "model", test::deepseek_v3_options());
  test::write_hidden_states(dir / "x.safetensors", 5, f.options.hidden, StDType::kBF16, 2);
  const std::string name = "model.layers.1.mlp.experts.3.gate_proj.weight_scale_inv";  // [1, 2]
  const fs::path file = test::overwrite_f32(dir / "model", name, 1, GetParam());
  const CliResult r = run_cli(run_args(dir));
  std::string value = GetParam() == 0.0f ? "0" : std::isnan(GetParam()) ? "nan" : "inf";
  if (GetParam() < 0) value = GetParam() == -kInf ? "-inf" : "-0.5";
  expect_rejected(r, dir,
                  "invalid element [0, 1] of '" + name + "' in " + file.string() +
                      ": expected a finite value > 0 (an FP8 block scale), got " + value);
}

std::string scale_case_name(const ::testing::TestParamInfo<float>& param) {
  constexpr const char* kNames[] = {"Nan", "Inf", "MinusInf", "Zero", "Negative"};
  return kNames[param.index];
}

INSTANTIATE_TEST_SUITE_P(Values, BadScale, ::testing::Values(kNan, kInf, -kInf, 0.0f, -0.5f),
                         scale_case_name);

TEST(BadWeight, NanBf16WeightIsRejectedAtLoad) {
  TempDir dir;
  const test::Fixture f = test::write_fixture(dir / "model", test::qwen3_moe_options());
  test::write_hidden_states(dir / "x.safetensors", 5, f.options.hidden, StDType::kBF16, 2);
  const std::string name = "model.layers.0.mlp.experts.2.up_proj.weight";  // [I, H]
  const std::uint16_t nan_bf16 = 0x7fc0;
  const std::int64_t index = 3 * f.options.hidden + 5;
  const fs::path file =
      test::overwrite_element(dir / "model", name, index, &nan_bf16, sizeof(nan_bf16));
  expect_rejected(run_cli(run_args(dir)), dir,
                  "invalid element [3, 5] of '" + name + "' in " + file.string() +
                      ": expected a finite value, got nan");
}

TEST(BadWeight, InfRouterWeightIsRejectedAtLoad) {
  TempDir dir;
  const test::Fixture f = test::write_fixture(dir / "model", test::qwen3_moe_options());
  test::write_hidden_states(dir / "x.safetensors", 5, f.options.hidden, StDType::kBF16, 2);
  const std::uint16_t inf_bf16 = 0xff80;  // -inf
  const std::string name = "model.layers.0.mlp.gate.weight";
  test::overwrite_element(dir / "model", name, f.options.hidden + 1, &inf_bf16, 2);
  expect_rejected(run_cli(run_args(dir)), dir, "invalid element [1, 1] of '" + name + "' in ");
}

TEST(BadHiddenStates, NanIsNamedInTheInputFileNotAsRouterLogits) {
  TempDir dir;
  const test::Fixture f = test::write_fixture(dir / "model", test::qwen3_moe_options());
  const std::int64_t h = f.options.hidden;
  std::vector<float> x(static_cast<std::size_t>(10 * h), 0.25f);
  x[static_cast<std::size_t>(8 * h)] = kNan;
  write_safetensors(dir / "x.safetensors",
                    {{"hidden", StDType::kF32, {10, h}, std::as_bytes(std::span(x))}});
  const CliResult r = run_cli(run_args(dir));
  expect_rejected(r, dir,
                  "invalid element [8, 0] of tensor 'hidden' in " +
                      (dir / "x.safetensors").string() +
                      ": expected a finite value, got nan (after rounding F32 to bf16)");
  EXPECT_EQ(r.output.find("router_logits"), std::string::npos) << r.output;
}

TEST(BadHiddenStates, OverflowInsideTheLayerIsNamedByInputRow) {
  TempDir dir;
  const test::Fixture f = test::write_fixture(dir / "model", test::qwen3_moe_options());
  const std::int64_t h = f.options.hidden;
  std::vector<float> x(static_cast<std::size_t>(4 * h), 0.25f);
  // Finite, even in bf16, but gate x up of such a row is far beyond fp32.
  for (std::int64_t c = 0; c < h; ++c) x[static_cast<std::size_t>(2 * h + c)] = 1e30f;
  write_safetensors(dir / "x.safetensors",
                    {{"hidden", StDType::kF32, {4, h}, std::as_bytes(std::span(x))}});
  const CliResult r = run_cli(run_args(dir));
  expect_rejected(r, dir,
                  "invalid hidden states row 2 of '" + (dir / "x.safetensors").string() +
                      "': expected values the layer's fp32 and bf16 arithmetic can hold, got "
                      "hidden_states[2, ");
  EXPECT_NE(r.output.find("(the row's largest magnitude is 1e+30); nothing was written"),
            std::string::npos)
      << r.output;
}

TEST(NoFiniteChecks, ANanOutputIsStillNeverWritten) {
  TempDir dir;
  const test::Fixture f = test::write_fixture(dir / "model", test::deepseek_v3_options());
  test::write_hidden_states(dir / "x.safetensors", 5, f.options.hidden, StDType::kBF16, 2);
  // Every expert's first block of down scales (output columns 0..127): token 0 reaches some.
  for (int e = 0; e < f.options.experts; ++e) {
    test::overwrite_f32(
        dir / "model",
        "model.layers.1.mlp.experts." + std::to_string(e) + ".down_proj.weight_scale_inv", 0, kNan);
  }
  const CliResult r = run_cli(run_args(dir) + " --no-finite-checks");
  expect_rejected(r, dir, "got hidden_states[0, 0] = nan");
}

}  // namespace
}  // namespace moerun::io
