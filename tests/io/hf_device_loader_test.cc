// Checkpoint layers uploaded to the device through pinned staging buffers equal the host loader's
// tensors bit for bit, in every layout and spelling, through staging buffers small enough to cut
// every tensor into many pieces (GPU; skipped without a device).
#include "io/hf_device_loader.h"

#include <gtest/gtest.h>

#include <cstring>

#include "cuda/cuda_test_util.h"
#include "fixture.h"
#include "io/hf_loader.h"

namespace moerun::io {
namespace {

using test::Fixture;
using test::TempDir;

void expect_same(const cuda::DeviceBuffer& device, const TensorView& host, const char* what) {
  ASSERT_EQ(device.defined(), host.defined()) << what;
  if (!host.defined()) return;
  ASSERT_EQ(device.view().shape(), host.shape()) << what;
  ASSERT_EQ(device.view().dtype(), host.dtype()) << what;
  const HostTensor got = device.download();
  EXPECT_EQ(std::memcmp(got.view().data(), host.data(), host.nbytes()), 0) << what;
}

void expect_same(const DeviceExperts& device, const MoeWeights& host) {
  expect_same(device.w13, host.w13, "w13");
  expect_same(device.w13_scale, host.w13_scale, "w13_scale");
  expect_same(device.w2, host.w2, "w2");
  expect_same(device.w2_scale, host.w2_scale, "w2_scale");
}

void check_upload(const std::filesystem::path& dir, int layer, const LoadOptions& options) {
  const HfCheckpoint ckpt(dir);
  const LoadedMoeLayer host = load_moe_layer(ckpt, layer, options);
  double last = 0.0;
  // 4 KiB staging buffers: every expert tensor spans several, and scales share them.
  const DeviceMoeLayer device = upload_moe_layer(
      ckpt, layer, options, [&](double f) { last = f; }, 4096);
  EXPECT_EQ(device.config.weight_dtype, host.config.weight_dtype);
  expect_same(device.routed, host.weights());
  expect_same(device.router_weight, host.router_weight.view(), "router");
  expect_same(device.correction_bias, host.correction_bias.view(), "correction bias");
  ASSERT_EQ(device.has_shared(), host.has_shared());
  if (host.has_shared()) expect_same(device.shared, host.shared_weights());
  EXPECT_GT(device.stats.uploaded_bytes, 0u);
  if (!options.quantize_fp8) {
    EXPECT_EQ(device.stats.total_bytes(), host.info.total_bytes());
    EXPECT_DOUBLE_EQ(last, 1.0) << "progress reaches the end";
  }
}

class DeviceLoad : public ::testing::TestWithParam<test::FixtureCase> {};

TEST_P(DeviceLoad, EqualsTheHostLoad) {
  MOERUN_REQUIRE_GPU();
  TempDir dir;
  test::write_fixture(dir.path(), GetParam().options);
  check_upload(dir.path(), GetParam().layer, {});
  LoadOptions rank;
  rank.ep_size = 2;
  rank.ep_rank = 1;
  rank.shared_experts = false;
  check_upload(dir.path(), GetParam().layer, rank);
}

INSTANTIATE_TEST_SUITE_P(Layouts, DeviceLoad, ::testing::ValuesIn(test::layout_cases()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(DeviceLoad, F16ExpertsAreConvertedOnTheWay) {
  MOERUN_REQUIRE_GPU();
  TempDir dir;
  auto o = test::qwen3_moe_options();
  o.expert_dtype = StDType::kF16;
  o.router_dtype = StDType::kF32;
  test::write_fixture(dir.path(), o);
  check_upload(dir.path(), 1, {});
}

TEST(DeviceLoad, QuantizedOnTheHostThenUploaded) {
  MOERUN_REQUIRE_GPU();
  TempDir dir;
  auto o = test::qwen3_moe_options();
  o.hidden = 256;
  o.inter = 128;
  test::write_fixture(dir.path(), o);
  LoadOptions options;
  options.quantize_fp8 = true;
  check_upload(dir.path(), 0, options);
}

}  // namespace
}  // namespace moerun::io
