// The CUDA Layer end to end vs the CPU oracle (same layout) and the fp64 dense reference, for
// scaled-down shapes of the three benchmark models; layouts, overlap, EP partials, CUDA graphs.
#include "cpu/layer.h"

#include <gtest/gtest.h>

#include <string>

#include "core/metrics.h"
#include "core/tolerances.h"
#include "cpu/dense_reference.h"
#include "cpu/routing.h"
#include "cuda/layer.h"
#include "cuda_test_util.h"
#include "layer_cases.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "tolerances.h"

namespace moerun::test {
namespace {

// Runs the CUDA layer's forward (routing on the device) and returns the output.
HostTensor run_layer(Layer& layer, const Inputs& in, DType out_dtype, bool routed) {
  const std::int64_t tokens = in.hidden.size(0);
  const DeviceTensor hidden = DeviceTensor::from_host(in.hidden.view());
  DeviceTensor out(out_dtype, {tokens, layer.config().hidden_size});
  if (routed) {
    const DeviceTensor ids = DeviceTensor::from_host(in.routing.ids.view());
    const DeviceTensor weights = DeviceTensor::from_host(in.routing.weights.view());
    layer.forward_routed(hidden.view(), ids.view(), weights.view(), out.view());
  } else {
    const DeviceTensor logits = DeviceTensor::from_host(in.logits.view());
    layer.forward(hidden.view(), logits.view(), out.view());
  }
  return out.to_host();
}

TEST(CudaLayer, MatchesOracleAllModels) {
  MOERUN_REQUIRE_GPU();
  for (const Model& m : models()) {
    const std::uint64_t seed = fresh_seed();
    const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
    const DeviceWeights device(host.view());
    for (LayoutChoice choice : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
      LayerOptions options;
      options.backend = Backend::kCuda;
      options.layout = choice;
      options.max_tokens = 600;
      Layer layer(m.config, device.view(), options);
      ASSERT_EQ(layer.backend(), Backend::kCuda);
      EXPECT_GT(layer.workspace_bytes(), 0u);
      for (std::int64_t tokens : {1, 127, 128, 129, 600}) {
        const Layout layout = layer.layout_for(tokens);
        SCOPED_TRACE(m.name + ", " + std::string(layout_name(layout)) + ", T " +
                     std::to_string(tokens));
        const Inputs in = make_inputs(m.config, host.view(), tokens, seed + tokens);
        const HostTensor got = run_layer(layer, in, DType::kBF16, /*routed=*/false);
        const HostTensor want = oracle(m.config, host.view(), in, layout, DType::kBF16);
        EXPECT_LE(relative_error(got.view(), want.view()), layer_vs_oracle_tolerance(m.config));
        const std::vector<double> dense =
            cpu::dense_reference(m.config, host.view(), in.hidden.view(), in.routing.ids.view(),
                                 in.routing.weights.view());
        EXPECT_LE(relative_error(got.view(), dense), layer_tolerance(m.config.weight_dtype));
      }
    }
  }
}

// The same function whatever the layout and overlap: the GEMM's per-element sums do not depend on
// where a row sits, so masked, contiguous and overlapped forwards agree bit for bit; so do reruns.
TEST(CudaLayer, LayoutsOverlapAndRerunsAgreeBitwise) {
  MOERUN_REQUIRE_GPU();
  for (const Model& m : models()) {
    SCOPED_TRACE(m.name);
    const std::uint64_t seed = fresh_seed();
    const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
    const DeviceWeights device(host.view());
    const Inputs in = make_inputs(m.config, host.view(), 100, seed);
    LayerOptions options;
    options.backend = Backend::kCuda;
    options.max_tokens = 100;
    options.layout = LayoutChoice::kMasked;
    Layer masked(m.config, device.view(), options);
    options.overlap = true;
    Layer overlapped(m.config, device.view(), options);
    options.overlap = false;
    options.layout = LayoutChoice::kContiguous;
    Layer contiguous(m.config, device.view(), options);
    const HostTensor a = run_layer(masked, in, DType::kBF16, true);
    EXPECT_TRUE(bitwise_equal(a, run_layer(overlapped, in, DType::kBF16, true))) << "overlap";
    EXPECT_TRUE(bitwise_equal(a, run_layer(contiguous, in, DType::kBF16, true))) << "contiguous";
    EXPECT_TRUE(bitwise_equal(a, run_layer(masked, in, DType::kBF16, true))) << "rerun";
    EXPECT_TRUE(bitwise_equal(a, run_layer(masked, in, DType::kBF16, false))) << "device routing";
  }
}

// Standard EP: one rank's f32 partial output, local expert 0 included.
TEST(CudaLayer, ExpertParallelPartialF32) {
  MOERUN_REQUIRE_GPU();
  for (const Model& m : models()) {
    MoeConfig c = m.config;
    c.ep_size = 4;
    c.ep_rank = 1;
    SCOPED_TRACE(m.name);
    const std::uint64_t seed = fresh_seed();
    const HostMoeWeights all = random_weights(c, c.num_experts, seed);
    const MoeWeights local =
        all.view().slice_experts(c.first_local_expert(), c.num_local_experts());
    const DeviceWeights device(local);
    Inputs in = make_inputs(c, all.view(), 130, seed);
    in.routing.ids.data<int>()[0] = c.first_local_expert();  // token 0 slot 0: local expert 0
    for (int j = 1; j < c.top_k(); ++j) in.routing.ids.data<int>()[j] = -1;
    LayerOptions options;
    options.backend = Backend::kCuda;
    options.max_tokens = 130;
    for (LayoutChoice choice : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
      options.layout = choice;
      Layer layer(c, device.view(), options);
      const HostTensor got = run_layer(layer, in, DType::kF32, true);
      const HostTensor want = oracle(c, local, in, layer.layout_for(130), DType::kF32);
      EXPECT_LE(relative_error(got.view(), want.view()), layer_vs_oracle_tolerance(c));
      // Token 0 is all local expert 0: a non-zero row.
      bool nonzero = false;
      for (std::int64_t j = 0; j < c.hidden_size; ++j) nonzero |= got.data<float>()[j] != 0.0f;
      EXPECT_TRUE(nonzero) << "local expert 0 dropped";
    }
  }
}

TEST(CudaLayer, AwkwardRouting) {
  MOERUN_REQUIRE_GPU();
  const Model m = models()[0];
  const std::uint64_t seed = fresh_seed();
  const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
  const DeviceWeights device(host.view());
  LayerOptions options;
  options.backend = Backend::kCuda;
  options.max_tokens = 128;
  const int k = m.config.top_k();
  for (int mode = 0; mode < 3; ++mode) {
    Inputs in = make_inputs(m.config, host.view(), 128, seed + mode);
    for (std::int64_t t = 0; t < 128; ++t) {
      for (int j = 0; j < k; ++j) {
        int& id = in.routing.ids.data<int>()[t * k + j];
        if (mode == 0) id = j == 0 ? 0 : -1;  // all to expert 0 (M_max rows)
        if (mode == 1) id = j < 2 ? m.config.num_experts - 1 - j : -1;  // two experts only
        if (mode == 2) id = -1;                                         // nothing routed: zeros
      }
    }
    for (LayoutChoice choice : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
      SCOPED_TRACE("mode " + std::to_string(mode));
      options.layout = choice;
      Layer layer(m.config, device.view(), options);
      const HostTensor got = run_layer(layer, in, DType::kBF16, true);
      const HostTensor want =
          oracle(m.config, host.view(), in, layer.layout_for(128), DType::kBF16);
      if (mode == 2) {
        EXPECT_TRUE(bitwise_equal(got, want)) << "an empty routing must give exact zeros";
      } else {
        EXPECT_LE(relative_error(got.view(), want.view()), kLayerVsOracleFp8);
      }
    }
  }
}

TEST(CudaLayer, OptionsAndLimits) {
  MOERUN_REQUIRE_GPU();
  const Model m = models()[0];
  const HostMoeWeights host = random_weights(m.config, m.config.num_experts, 1);
  const DeviceWeights device(host.view());
  LayerOptions options;
  options.backend = Backend::kCuda;
  EXPECT_THROW(Layer(m.config, device.view(), options), InvalidArgument) << "max_tokens 0";
  options.max_tokens = 1000;
  Layer layer(m.config, device.view(), options);
  EXPECT_EQ(layer.layout_for(1), Layout::kMasked);
  EXPECT_EQ(layer.layout_for(128), Layout::kMasked);
  EXPECT_EQ(layer.layout_for(129), Layout::kContiguous);
  // For a few tokens the masked layout's E_l x 128 rows outweigh the contiguous capacity: a budget
  // below the auto plan drops the masked layout; a budget below anything is rejected.
  LayerOptions small = options;
  small.max_tokens = 4;
  const std::size_t full = Layer(m.config, device.view(), small).workspace_bytes();
  LayerOptions contiguous = small;
  contiguous.layout = LayoutChoice::kContiguous;
  const std::size_t contiguous_only = cuda::plan_workspace(m.config, contiguous).bytes;
  ASSERT_LT(contiguous_only, full);
  small.workspace_limit_bytes = contiguous_only;
  Layer budget(m.config, device.view(), small);
  EXPECT_EQ(budget.layout_for(1), Layout::kContiguous);
  EXPECT_EQ(budget.workspace_bytes(), contiguous_only);
  small.workspace_limit_bytes = 1024;
  EXPECT_THROW(Layer(m.config, device.view(), small), InvalidArgument);
  small.layout = LayoutChoice::kMasked;
  small.workspace_limit_bytes = contiguous_only;
  EXPECT_THROW(Layer(m.config, device.view(), small), InvalidArgument) << "masked over budget";
  // T = 0 is a no-op; T > max_tokens is rejected.
  DeviceTensor hidden0(DType::kBF16, {0, m.config.hidden_size}),
      out0(DType::kBF16, {0, m.config.hidden_size});
  DeviceTensor logits0(DType::kF32, {0, m.config.num_experts});
  layer.forward(hidden0.view(), logits0.view(), out0.view());
  DeviceTensor hidden_big(DType::kBF16, {1001, m.config.hidden_size}),
      out_big(DType::kBF16, {1001, m.config.hidden_size}),
      logits_big(DType::kF32, {1001, m.config.num_experts});
  EXPECT_THROW(layer.forward(hidden_big.view(), logits_big.view(), out_big.view()),
               InvalidArgument);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  // Host weights with backend auto stay on the CPU.
  options = {};
  EXPECT_EQ(Layer(m.config, host.view(), options).backend(), Backend::kCpu);
}

// Capture one forward (device routing included) in a CUDA graph, then replay it with new hidden
// states and logits written into the same input buffers: each replay matches the oracle for its
// own routing.
TEST(CudaLayer, GraphCaptureReplaysWithNewRouting) {
  MOERUN_REQUIRE_GPU();
  for (const Model& m : {models()[0], models()[1]}) {
    for (LayoutChoice choice : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
      SCOPED_TRACE(m.name + (choice == LayoutChoice::kMasked ? ", masked" : ", contiguous"));
      const std::uint64_t seed = fresh_seed();
      const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
      const DeviceWeights device(host.view());
      constexpr std::int64_t kTokens = 96;
      LayerOptions options;
      options.backend = Backend::kCuda;
      options.layout = choice;
      options.max_tokens = kTokens;
      options.overlap = choice == LayoutChoice::kMasked;
      Layer layer(m.config, device.view(), options);
      cudaStream_t stream;
      MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      layer.set_stream(stream);
      DeviceTensor hidden(DType::kBF16, {kTokens, m.config.hidden_size});
      DeviceTensor logits(DType::kF32, {kTokens, m.config.num_experts});
      DeviceTensor out(DType::kBF16, {kTokens, m.config.hidden_size});
      const Inputs first = make_inputs(m.config, host.view(), kTokens, seed);
      hidden.copy_from(first.hidden.view());
      logits.copy_from(first.logits.view());
      // Warm-up outside the capture (module loading, attribute setting).
      layer.forward(hidden.view(), logits.view(), out.view());
      MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));

      cudaGraph_t graph;
      cudaGraphExec_t exec;
      MOERUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      layer.forward(hidden.view(), logits.view(), out.view());
      MOERUN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      MOERUN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      for (int replay = 0; replay < 3; ++replay) {
        const Inputs in = make_inputs(m.config, host.view(), kTokens, seed + 1000 + replay);
        hidden.copy_from(in.hidden.view());
        logits.copy_from(in.logits.view());
        out.poison();
        MOERUN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
        MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
        const HostTensor got = out.to_host();
        const HostTensor want =
            oracle(m.config, host.view(), in, layer.layout_for(kTokens), DType::kBF16);
        EXPECT_LE(relative_error(got.view(), want.view()), layer_vs_oracle_tolerance(m.config))
            << "replay " << replay;
      }
      MOERUN_CUDA_CHECK(cudaGraphExecDestroy(exec));
      MOERUN_CUDA_CHECK(cudaGraphDestroy(graph));
      MOERUN_CUDA_CHECK(cudaStreamDestroy(stream));
    }
  }
}

}  // namespace
}  // namespace moerun::test
