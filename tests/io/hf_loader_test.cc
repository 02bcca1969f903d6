// Loading MoE layers: the loaded weights equal the checkpoint's tensors packed by hand, bit for
// bit, in every family and dtype; zero-copy where the file allows; EP slices; FP8 on load.
#include "io/hf_loader.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/metrics.h"
#include "cpu/quant.h"
#include "fixture.h"
#include "moerun/errors.h"

namespace moerun::io {
namespace {

using test::Fixture;
using test::TempDir;

void expect_same_bytes(const TensorView& actual, const TensorView& expected, const char* what) {
  ASSERT_EQ(actual.dtype(), expected.dtype()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  EXPECT_EQ(std::memcmp(actual.data(), expected.data(), expected.nbytes()), 0) << what;
}

void expect_layer_equals_reference(const LoadedMoeLayer& loaded, const test::ReferenceLayer& ref) {
  const MoeWeights w = loaded.weights();
  expect_same_bytes(w.w13, ref.w13.view(), "w13");
  expect_same_bytes(w.w2, ref.w2.view(), "w2");
  if (ref.w13_scale.defined()) {
    expect_same_bytes(w.w13_scale, ref.w13_scale.view(), "w13_scale");
    expect_same_bytes(w.w2_scale, ref.w2_scale.view(), "w2_scale");
  } else {
    EXPECT_FALSE(w.w13_scale.defined());
    EXPECT_FALSE(w.w2_scale.defined());
  }
  expect_same_bytes(loaded.router_weight.view(), ref.router_weight.view(), "router weight");
  if (ref.correction_bias.defined()) {
    expect_same_bytes(w.correction_bias, ref.correction_bias.view(), "correction bias");
  } else {
    EXPECT_FALSE(w.correction_bias.defined());
  }
}

struct Case {
  const char* name;
  test::FixtureOptions (*options)();
  int layer;
};
// Test names print the case, not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class LoadFamily : public ::testing::TestWithParam<Case> {};

TEST_P(LoadFamily, EqualsTheCheckpointPackedByHand) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir.path(), GetParam().options());
  const HfCheckpoint ckpt(dir.path());
  const LoadedMoeLayer loaded = load_moe_layer(ckpt, GetParam().layer);
  expect_layer_equals_reference(loaded, test::reference_layer(f, GetParam().layer));
  loaded.weights().validate(loaded.config, loaded.config.num_experts, Device{});
  EXPECT_EQ(loaded.stats.total_bytes(), loaded.info.total_bytes());
}

INSTANTIATE_TEST_SUITE_P(Families, LoadFamily,
                         ::testing::Values(Case{"DeepseekV3Fp8Sharded", test::deepseek_v3_options,
                                                2},
                                           Case{"Qwen3MoeBf16", test::qwen3_moe_options, 1},
                                           Case{"MixtralBf16", test::mixtral_options, 0}),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(Load, Fp8ScaleInvMapsOntoW13ScaleRows) {
  TempDir dir;
  auto o = test::deepseek_v3_options();
  o.inter = 256;  // two scale rows per projection, so gate and up rows are told apart
  const Fixture f = test::write_fixture(dir.path(), o);
  const LoadedMoeLayer loaded = load_moe_layer(HfCheckpoint(dir.path()), 1);
  const float* s = loaded.w13_scale.data<float>();  // [E, 4, 2]
  auto stored = [&](const std::string& name, int i) {
    float v;
    std::memcpy(&v, f.tensors.at(name).bytes.data() + 4 * i, 4);
    return v;
  };
  const std::string e3 = "model.layers.1.mlp.experts.3.";
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(s[3 * 8 + i], stored(e3 + "gate_proj.weight_scale_inv", i)) << i;
    EXPECT_EQ(s[3 * 8 + 4 + i], stored(e3 + "up_proj.weight_scale_inv", i)) << i;
  }
  // Dequantized, a weight is exactly code * weight_scale_inv.
  const HostTensor w13 = cpu::dequantize_weights_fp8(loaded.w13.view(), loaded.w13_scale.view());
  const auto& up = f.tensors.at(e3 + "up_proj.weight");
  const std::int64_t row = 200, col = 130;  // up row 200 is w13 row 456: block (3, 1)
  const float code =
      fp8e4m3_to_float(fp8e4m3{std::to_integer<std::uint8_t>(up.bytes[row * 256 + col])});
  const float scale = stored(e3 + "up_proj.weight_scale_inv", 1 * 2 + 1);
  EXPECT_EQ(bf16_to_float(w13.data<bf16>()[(3 * 512 + 256 + row) * 256 + col]),
            round_to_bf16(code * scale));
}

TEST(Load, F16AndF32ExpertsAreConvertedToBf16) {
  for (StDType dtype : {StDType::kF16, StDType::kF32}) {
    TempDir dir;
    auto o = test::qwen3_moe_options();
    o.expert_dtype = dtype;
    o.router_dtype = dtype;
    const Fixture f = test::write_fixture(dir.path(), o);
    const LoadedMoeLayer loaded = load_moe_layer(HfCheckpoint(dir.path()), 0);
    EXPECT_EQ(loaded.config.weight_dtype, DType::kBF16);
    expect_layer_equals_reference(loaded, test::reference_layer(f, 0));
    EXPECT_EQ(loaded.stats.mapped_bytes, 0u);
    EXPECT_GT(loaded.stats.converted_bytes, 0u);
    bool noted = false;
    for (const auto& n : loaded.notes) noted |= n.find("converted from") != std::string::npos;
    EXPECT_TRUE(noted) << "the conversion is reported";
  }
}

TEST(Load, DownProjectionsBackToBackAreZeroCopy) {
  TempDir dir;
  auto o = test::deepseek_v3_options();
  o.shards = 1;
  o.down_back_to_back = true;
  const Fixture f = test::write_fixture(dir.path(), o);
  const LoadedMoeLayer loaded = load_moe_layer(HfCheckpoint(dir.path()), 1);
  expect_layer_equals_reference(loaded, test::reference_layer(f, 1));
  EXPECT_FALSE(loaded.w2_storage.defined()) << "w2 is a view of the mapping";
  EXPECT_FALSE(loaded.w2_scale_storage.defined());
  EXPECT_EQ(loaded.stats.mapped_bytes, loaded.w2.nbytes() + loaded.w2_scale.nbytes());
}

TEST(Load, NameSortedDownProjectionsAreCopied) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir.path(), test::mixtral_options());
  const LoadedMoeLayer loaded = load_moe_layer(HfCheckpoint(dir.path()), 0);
  EXPECT_TRUE(loaded.w2_storage.defined());
  EXPECT_EQ(loaded.stats.mapped_bytes, 0u);
  EXPECT_EQ(loaded.stats.converted_bytes, loaded.info.router_bytes)
      << "only the router is widened to f32; BF16 experts are copied, not converted";
}

TEST(Load, ExpertParallelRankLoadsItsSliceOnly) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir.path(), test::deepseek_v3_options());
  LoadOptions options;
  options.ep_size = 4;
  options.ep_rank = 3;
  const LoadedMoeLayer loaded = load_moe_layer(HfCheckpoint(dir.path()), 1, options);
  EXPECT_EQ(loaded.config.ep_size, 4);
  EXPECT_EQ(loaded.config.ep_rank, 3);
  EXPECT_EQ(loaded.w13.size(0), 4);
  expect_layer_equals_reference(loaded, test::reference_layer(f, 1, 12, 4));
}

TEST(Load, ExpertParallelSizeMustDivideExperts) {
  TempDir dir;
  test::write_fixture(dir.path(), test::mixtral_options());
  LoadOptions options;
  options.ep_size = 3;
  EXPECT_THROW(load_moe_layer(HfCheckpoint(dir.path()), 0, options), InvalidArgument);
}

TEST(Load, QuantizeFp8OnLoadAndCheckTheRoundTrip) {
  TempDir dir;
  auto o = test::qwen3_moe_options();
  o.hidden = 256;
  o.inter = 128;
  const Fixture f = test::write_fixture(dir.path(), o);
  LoadOptions options;
  options.quantize_fp8 = true;
  const LoadedMoeLayer loaded = load_moe_layer(HfCheckpoint(dir.path()), 0, options);
  EXPECT_EQ(loaded.config.weight_dtype, DType::kFP8E4M3);
  const test::ReferenceLayer ref = test::reference_layer(f, 0);
  const cpu::BlockQuantized q13 = cpu::quantize_weights_fp8(ref.w13.view());
  const cpu::BlockQuantized q2 = cpu::quantize_weights_fp8(ref.w2.view());
  expect_same_bytes(loaded.w13.view(), q13.weights.view(), "w13");
  expect_same_bytes(loaded.w13_scale.view(), q13.scales.view(), "w13_scale");
  expect_same_bytes(loaded.w2, q2.weights.view(), "w2");
  expect_same_bytes(loaded.w2_scale, q2.scales.view(), "w2_scale");
  // The reverse check: e4m3 keeps 3 mantissa bits, so a few percent, never zero or huge.
  ASSERT_TRUE(loaded.quantization.has_value());
  EXPECT_GT(loaded.quantization->w13_error, 1e-3);
  EXPECT_LT(loaded.quantization->w13_error, 5e-2);
  EXPECT_GT(loaded.quantization->w2_error, 1e-3);
  EXPECT_LT(loaded.quantization->w2_error, 5e-2);
}

TEST(Load, QuantizeFp8NeedsMultiplesOf128) {
  TempDir dir;
  test::write_fixture(dir.path(), test::mixtral_options());  // H 64
  LoadOptions options;
  options.quantize_fp8 = true;
  try {
    load_moe_layer(HfCheckpoint(dir.path()), 0, options);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("hidden_size: expected a multiple of 128 for FP8"),
              std::string::npos)
        << e.what();
  }
}

TEST(Load, QuantizeFp8OfAnFp8CheckpointIsANoOp) {
  TempDir dir;
  const Fixture f = test::write_fixture(dir.path(), test::deepseek_v3_options());
  LoadOptions options;
  options.quantize_fp8 = true;
  const LoadedMoeLayer loaded = load_moe_layer(HfCheckpoint(dir.path()), 1, options);
  expect_layer_equals_reference(loaded, test::reference_layer(f, 1));
  EXPECT_FALSE(loaded.quantization.has_value());
}

}  // namespace
}  // namespace moerun::io
