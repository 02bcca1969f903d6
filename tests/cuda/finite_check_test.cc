// The device finiteness check (cuda/finite_check.h) against the host check (core/checks.h), and
// the CUDA layer's use of it: what is found, where it is reported, inside a CUDA graph too, and
// that nothing is found or reported with the check off.
#include "cuda/finite_check.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/checks.h"
#include "core/metrics.h"
#include "cpu/layer.h"
#include "cpu/routing.h"
#include "cuda/workspace.h"
#include "cuda_test_util.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "tolerances.h"

namespace moerun::test {
namespace {

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// `count` finite random values of `dtype` (scales: positive), with `bad` of them replaced at
// random places by NaN, +-inf or (scales) zero or negative values.
HostTensor planted(DType dtype, bool scale, std::int64_t count, int bad, std::mt19937_64& rng) {
  HostTensor t(dtype, {count});
  std::uniform_real_distribution<float> u(scale ? 0.01f : -100.0f, 100.0f);
  for (std::int64_t i = 0; i < count; ++i) {
    const float v = u(rng);
    if (dtype == DType::kBF16) t.data<bf16>()[i] = float_to_bf16(v);
    if (dtype == DType::kF32) t.data<float>()[i] = v;
    if (dtype == DType::kFP8E4M3) t.data<fp8e4m3>()[i] = float_to_fp8e4m3(v);
  }
  const float values[] = {kNan, kInf, -kInf, 0.0f, -0.0f, -3.0f};
  for (int b = 0; b < bad; ++b) {
    const auto i = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(count));
    const float v = values[rng() % (scale ? 6 : 3)];
    if (dtype == DType::kBF16) t.data<bf16>()[i] = float_to_bf16(v);
    if (dtype == DType::kF32) t.data<float>()[i] = v;
    if (dtype == DType::kFP8E4M3) t.data<fp8e4m3>()[i] = fp8e4m3{0x7f};
  }
  return t;
}

// A device copy starting `offset` elements into its allocation (offset 1: not 16-byte aligned).
struct OffsetCopy {
  DeviceTensor storage;
  TensorView view;
  OffsetCopy(const HostTensor& host, std::int64_t offset)
      : storage(host.dtype(), {host.numel() + offset}) {
    auto* data = static_cast<std::byte*>(storage.view().data()) +
                 static_cast<std::size_t>(offset) * dtype_size(host.dtype());
    MOERUN_CUDA_CHECK(cudaMemcpy(data, host.view().data(), host.nbytes(), cudaMemcpyHostToDevice));
    view = TensorView(data, host.dtype(), host.shape(), storage.view().device());
  }
};

TEST(CudaFiniteCheck, FindsWhatTheHostCheckFinds) {
  MOERUN_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  cuda::FiniteCheck check;
  // The check's scratch state (as a forward's workspace holds it), poisoned: enqueue zeroes it.
  const DeviceTensor state(DType::kI32,
                           {static_cast<std::int64_t>(cuda::kFiniteCheckStateBytes / 4)});
  struct Kind {
    DType dtype;
    bool scale;
  };
  for (const Kind kind : {Kind{DType::kBF16, false}, Kind{DType::kF32, false},
                          Kind{DType::kFP8E4M3, false}, Kind{DType::kF32, true}}) {
    for (const std::int64_t count : {1, 7, 16, 4097, (1 << 20) + 3}) {
      for (const std::int64_t offset : {0, 1}) {
        for (const int bad : {0, 1, 3}) {
          SCOPED_TRACE(std::string(dtype_name(kind.dtype)) + (kind.scale ? " scale" : "") +
                       ", count " + std::to_string(count) + ", offset " + std::to_string(offset) +
                       ", bad " + std::to_string(bad));
          const HostTensor host = planted(kind.dtype, kind.scale, count, bad, rng);
          // A second, clean tensor in the same launch: its slot stays empty.
          const HostTensor clean = planted(DType::kF32, false, 1000, 0, rng);
          const OffsetCopy a(host, offset), b(clean, offset);
          const cuda::CheckSegment segments[] = {
              {a.view, cuda::CheckedTensor::kW13Scale, kind.scale},
              {b.view, cuda::CheckedTensor::kHiddenStates}};
          check.enqueue(segments, state.view().data(), nullptr);
          MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
          const std::optional<std::int64_t> want = kind.scale
                                                       ? detail::first_bad_scale(host.view())
                                                       : detail::first_non_finite(host.view());
          const std::optional<cuda::Finding> got = check.take();
          ASSERT_EQ(got.has_value(), want.has_value());
          if (want) {
            EXPECT_EQ(got->tensor, cuda::CheckedTensor::kW13Scale);
            EXPECT_EQ(got->index, *want);
            const std::string value = detail::value_text(host.view(), *want);
            // A finite scale that is found is zero or negative.
            const bool finite = value != "nan" && value != "inf" && value != "-inf";
            const std::string expected = finite ? "<= 0" : value;
            EXPECT_EQ(cuda::bad_value_text(got->value), expected) << value;
          }
          EXPECT_FALSE(check.take().has_value()) << "take() forgets what it returned";
        }
      }
    }
  }
}

TEST(CudaFiniteCheck, KeepsTheFirstFindingOverSeveralLaunches) {
  MOERUN_REQUIRE_GPU();
  std::mt19937_64 rng(fresh_seed());
  cuda::FiniteCheck check;
  const DeviceTensor state(DType::kI32,
                           {static_cast<std::int64_t>(cuda::kFiniteCheckStateBytes / 4)});
  HostTensor t = planted(DType::kBF16, false, 5000, 0, rng);
  t.data<bf16>()[4000] = float_to_bf16(kInf);
  const DeviceTensor late = DeviceTensor::from_host(t.view());
  t.data<bf16>()[4000] = float_to_bf16(1.0f);
  t.data<bf16>()[17] = float_to_bf16(-kInf);
  const DeviceTensor early = DeviceTensor::from_host(t.view());
  const cuda::CheckSegment first[] = {{late.view(), cuda::CheckedTensor::kRouterLogits}};
  const cuda::CheckSegment second[] = {{early.view(), cuda::CheckedTensor::kRouterLogits}};
  check.enqueue(first, state.view().data(), nullptr);
  check.enqueue(second, state.view().data(), nullptr);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  const std::optional<cuda::Finding> got = check.take();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->index, 17);
  EXPECT_EQ(got->value, cuda::BadValue::kNegativeInfinity);
}

// The CUDA layer: a small DeepSeek-style FP8 layer (grouped routing, correction bias).
MoeConfig small_config() {
  MoeConfig c = model_preset("deepseek-v3");
  c.hidden_size = 256;
  c.intermediate_size = 256;
  c.num_experts = 32;
  return c;
}

LayerOptions cuda_options(bool check_finite, std::int64_t max_tokens) {
  LayerOptions o;
  o.backend = Backend::kCuda;
  o.max_tokens = max_tokens;
  o.check_finite = check_finite;
  return o;
}

std::string element(const char* name, std::int64_t row, std::int64_t col) {
  return std::string(name) + "[" + std::to_string(row) + ", " + std::to_string(col) + "]";
}

TEST(CudaLayerFinite, BadInputsAreReportedAtTheNextCallNamingTheCallersTensor) {
  MOERUN_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  const MoeConfig c = small_config();
  const HostMoeWeights host = random_weights(c, c.num_experts, seed);
  const DeviceWeights device(host.view());
  constexpr std::int64_t kTokens = 50;
  Layer layer(c, device.view(), cuda_options(true, kTokens));
  HostTensor hidden = random_hidden_states(kTokens, c.hidden_size, seed);
  HostTensor logits = random_router_logits(kTokens, c.num_experts, seed);
  std::mt19937_64 rng(seed);
  const auto t = static_cast<std::int64_t>(rng() % kTokens);
  const auto col = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(c.hidden_size));
  hidden.data<bf16>()[t * c.hidden_size + col] = float_to_bf16(kNan);
  logits.data<float>()[t * c.num_experts] = kNan;  // what NaN hidden states would make of them
  DeviceTensor d_hidden = DeviceTensor::from_host(hidden.view());
  DeviceTensor d_logits = DeviceTensor::from_host(logits.view());
  DeviceTensor out(DType::kBF16, {kTokens, c.hidden_size});
  layer.forward(d_hidden.view(), d_logits.view(), out.view());  // enqueued: nothing waits
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  const std::string hidden_error =
      "moerun: invalid " + element("hidden_states", t, col) +
      ": expected a finite value, got nan (found on the device by the check of an earlier forward)";
  EXPECT_EQ(error_of([&] { layer.report_pending_errors(); }), hidden_error);
  EXPECT_NO_THROW(layer.report_pending_errors()) << "reported once";

  // Logits alone, reported by the next forward's call.
  const HostTensor good_hidden = random_hidden_states(kTokens, c.hidden_size, seed + 1);
  d_hidden.copy_from(good_hidden.view());
  logits.data<float>()[t * c.num_experts] = 1.0f;
  logits.data<float>()[(kTokens - 1) * c.num_experts + 3] = -kInf;
  d_logits.copy_from(logits.view());
  layer.forward(d_hidden.view(), d_logits.view(), out.view());
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(error_of([&] { layer.forward(d_hidden.view(), d_logits.view(), out.view()); }),
            "moerun: invalid " + element("router_logits", kTokens - 1, 3) +
                ": expected a finite value, got -inf (found on the device by the check of an "
                "earlier forward)");
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  layer.report_pending_errors();  // nothing: the throwing call enqueued nothing

  // The caller's topk_weights in forward_routed.
  const cpu::TopK routing = cpu::route(c.routing, c.num_experts,
                                       random_router_logits(kTokens, c.num_experts, seed).view(),
                                       host.correction_bias.view());
  HostTensor topk_weights = routing.weights.clone();
  topk_weights.data<float>()[5] = kInf;
  const DeviceTensor ids = DeviceTensor::from_host(routing.ids.view());
  const DeviceTensor weights = DeviceTensor::from_host(topk_weights.view());
  layer.forward_routed(d_hidden.view(), ids.view(), weights.view(), out.view());
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(error_of([&] { layer.report_pending_errors(); }),
            "moerun: invalid " + element("topk_weights", 5 / c.top_k(), 5 % c.top_k()) +
                ": expected a finite value, got inf (found on the device by the check of an "
                "earlier forward)");

  // Clean inputs: a forward matches the oracle and reports nothing.
  const DeviceTensor good_weights = DeviceTensor::from_host(routing.weights.view());
  out.poison();
  layer.forward_routed(d_hidden.view(), ids.view(), good_weights.view(), out.view());
  const HostTensor got = out.to_host();
  layer.report_pending_errors();
  HostTensor want(DType::kBF16, {kTokens, c.hidden_size});
  cpu::moe_forward(c, host.view(), good_hidden.view(), routing.ids.view(), routing.weights.view(),
                   want.view(), {layer.layout_for(kTokens), 128, 0, false});
  EXPECT_LE(relative_error(got.view(), want.view()), kLayerVsOracleFp8);
}

TEST(CudaLayerFinite, GraphReplaysAreCheckedAndReportedAfterTheSync) {
  MOERUN_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  const MoeConfig c = small_config();
  const HostMoeWeights host = random_weights(c, c.num_experts, seed);
  const DeviceWeights device(host.view());
  constexpr std::int64_t kTokens = 64;
  Layer layer(c, device.view(), cuda_options(true, kTokens));
  cudaStream_t stream;
  MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  layer.set_stream(stream);
  DeviceTensor hidden(DType::kBF16, {kTokens, c.hidden_size});
  DeviceTensor logits(DType::kF32, {kTokens, c.num_experts});
  DeviceTensor out(DType::kBF16, {kTokens, c.hidden_size});
  HostTensor h = random_hidden_states(kTokens, c.hidden_size, seed);
  const HostTensor l = random_router_logits(kTokens, c.num_experts, seed);
  hidden.copy_from(h.view());
  logits.copy_from(l.view());
  layer.forward(hidden.view(), logits.view(), out.view());  // warm-up outside the capture
  MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
  layer.report_pending_errors();

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  MOERUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  layer.forward(hidden.view(), logits.view(), out.view());
  MOERUN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  MOERUN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 3; ++replay) {
    SCOPED_TRACE("replay " + std::to_string(replay));
    const bool bad = replay == 1;
    h = random_hidden_states(kTokens, c.hidden_size, seed + 10 + replay);
    if (bad) h.data<bf16>()[7 * c.hidden_size + 9] = float_to_bf16(-kInf);
    hidden.copy_from(h.view());
    out.poison();
    MOERUN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (bad) {
      EXPECT_EQ(error_of([&] { layer.report_pending_errors(); }),
                "moerun: invalid hidden_states[7, 9]: expected a finite value, got -inf (found on "
                "the device by the check of an earlier forward)");
      continue;
    }
    layer.report_pending_errors();
    const cpu::TopK routing =
        cpu::route(c.routing, c.num_experts, l.view(), host.correction_bias.view());
    HostTensor want(DType::kBF16, {kTokens, c.hidden_size});
    cpu::moe_forward(c, host.view(), h.view(), routing.ids.view(), routing.weights.view(),
                     want.view(), {layer.layout_for(kTokens), 128, 0, false});
    EXPECT_LE(relative_error(out.to_host().view(), want.view()), kLayerVsOracleFp8);
  }
  MOERUN_CUDA_CHECK(cudaGraphExecDestroy(exec));
  MOERUN_CUDA_CHECK(cudaGraphDestroy(graph));
  MOERUN_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(CudaLayerFinite, BadWeightsAreRejectedAtConstructionWithTheirValue) {
  MOERUN_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  const MoeConfig c = small_config();
  HostMoeWeights host = random_weights(c, c.num_experts, seed);
  // Expert 3, block row 1, block column 0 of w2_scale ([E, H/128, I/128] = [32, 2, 2]).
  host.w2_scale.data<float>()[3 * 4 + 1 * 2 + 0] = -0.5f;
  const DeviceWeights device(host.view());
  EXPECT_EQ(error_of([&] { Layer layer(c, device.view(), cuda_options(true, 8)); }),
            "moerun: invalid w2_scale[3, 1, 0]: expected a finite value > 0 (an FP8 block "
            "scale), got -0.5");
  host.w2_scale.data<float>()[3 * 4 + 1 * 2 + 0] = 1.0f;
  host.w13.data<fp8e4m3>()[12345] = fp8e4m3{0xff};  // e4m3fn NaN
  const DeviceWeights nan_weights(host.view());
  const std::string message =
      error_of([&] { Layer layer(c, nan_weights.view(), cuda_options(true, 8)); });
  EXPECT_EQ(message, "moerun: invalid w13" + detail::index_text(host.w13.shape(), 12345) +
                         ": expected a finite value, got nan");
  EXPECT_NO_THROW(Layer(c, nan_weights.view(), cuda_options(false, 8))) << "check_finite off";
}

TEST(CudaLayerFinite, OffChecksNothing) {
  MOERUN_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  const MoeConfig c = small_config();
  const HostMoeWeights host = random_weights(c, c.num_experts, seed);
  const DeviceWeights device(host.view());
  Layer layer(c, device.view(), cuda_options(false, 16));
  HostTensor hidden = random_hidden_states(16, c.hidden_size, seed);
  hidden.data<bf16>()[0] = float_to_bf16(kNan);
  const DeviceTensor d_hidden = DeviceTensor::from_host(hidden.view());
  const DeviceTensor d_logits =
      DeviceTensor::from_host(random_router_logits(16, c.num_experts, seed).view());
  DeviceTensor out(DType::kBF16, {16, c.hidden_size});
  layer.forward(d_hidden.view(), d_logits.view(), out.view());
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_NO_THROW(layer.report_pending_errors());
  EXPECT_NO_THROW(layer.forward(d_hidden.view(), d_logits.view(), out.view()));
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
}

TEST(CudaLayer, OutOfDeviceMemoryNamesTheWorkspaceAndLeavesTheDeviceUsable) {
  MOERUN_REQUIRE_GPU();
  const MoeConfig c = small_config();
  const HostMoeWeights host = random_weights(c, c.num_experts, fresh_seed());
  const DeviceWeights device(host.view());
  LayerOptions huge = cuda_options(true, std::int64_t{1} << 31);
  huge.layout = LayoutChoice::kContiguous;
  try {
    Layer layer(c, device.view(), huge);
    FAIL() << "a workspace for 2^31 tokens fits in device memory?";
  } catch (const ResourceError& e) {
    EXPECT_CONTAINS(std::string(e.what()), "out of device memory: cannot allocate ");
    EXPECT_CONTAINS(std::string(e.what()),
                    " bytes for the layer's workspace (max_tokens 2147483648)");
  }
  // The failed allocation is not reported again by the next launch's check.
  Layer layer(c, device.view(), cuda_options(true, 8));
  const DeviceTensor hidden =
      DeviceTensor::from_host(random_hidden_states(8, c.hidden_size, 1).view());
  const DeviceTensor logits =
      DeviceTensor::from_host(random_router_logits(8, c.num_experts, 1).view());
  DeviceTensor out(DType::kBF16, {8, c.hidden_size});
  EXPECT_NO_THROW(layer.forward(hidden.view(), logits.view(), out.view()));
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace moerun::test
