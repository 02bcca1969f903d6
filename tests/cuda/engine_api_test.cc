// The engine-facing API on the CUDA backend against the CPU oracle: the caller's stream and
// workspace per call, concurrent forwards, CUDA-graph capture in global mode, local ids, an
// arbitrary expert placement, the output scale, pre-quantized FP8 input, and the device index.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "core/metrics.h"
#include "cpu/dispatch.h"
#include "cpu/layer.h"
#include "cuda_test_util.h"
#include "engine_fixture.h"
#include "layer_cases.h"
#include "moerun/errors.h"
#include "moerun/expert_map.h"
#include "moerun/layer.h"
#include "tolerances.h"

namespace moerun::test {
namespace {

// A non-blocking stream of the current device, destroyed with the object.
class Stream {
 public:
  Stream() { MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void sync() const { MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

// A poisoned workspace of exactly `bytes` (cudaMalloc: 256-byte aligned).
DeviceTensor workspace_of(std::size_t bytes) {
  return DeviceTensor(DType::kFP8E4M3, {static_cast<std::int64_t>(bytes)});
}

Workspace as_workspace(const DeviceTensor& t) { return {t.view().data(), t.view().nbytes()}; }

LayerOptions engine_options(std::int64_t max_tokens, LayoutChoice layout = LayoutChoice::kAuto) {
  LayerOptions o;
  o.backend = Backend::kCuda;
  o.layout = layout;
  o.max_tokens = max_tokens;
  o.own_workspace = false;
  return o;
}

// Device copies of one forward's inputs.
struct DeviceInputs {
  DeviceTensor hidden, logits, ids, weights;
  explicit DeviceInputs(const Inputs& in)
      : hidden(DeviceTensor::from_host(in.hidden.view())),
        logits(DeviceTensor::from_host(in.logits.view())),
        ids(DeviceTensor::from_host(in.routing.ids.view())),
        weights(DeviceTensor::from_host(in.routing.weights.view())) {}
  TopKRouting routing(ExpertIds kind = ExpertIds::kGlobal) const {
    return {ids.view(), weights.view(), kind};
  }
};

TEST(CudaEngineApi, CallerWorkspaceAndStreamMatchOracle) {
  MOERUN_REQUIRE_GPU();
  for (const Model& m : models()) {
    const std::uint64_t seed = fresh_seed();
    const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
    const DeviceWeights device(host.view());
    const Layer layer(m.config, device.view(), engine_options(300));
    EXPECT_EQ(layer.workspace_bytes(), 0u) << "own_workspace false allocates none";
    EXPECT_EQ(layer.device(), (Device{DeviceType::kCuda, 0}));
    LayerOptions owning = engine_options(300);
    owning.own_workspace = true;
    Layer convenience(m.config, device.view(), owning);
    EXPECT_EQ(convenience.workspace_bytes(), layer.workspace_bytes_for(300));
    EXPECT_EQ(workspace_bytes(m.config, owning), layer.workspace_bytes_for(300));
    const Stream stream;
    for (std::int64_t tokens : {1, 100, 129, 300}) {
      SCOPED_TRACE(m.name + ", T " + std::to_string(tokens));
      const Inputs in = make_inputs(m.config, host.view(), tokens, seed + tokens);
      const DeviceInputs d(in);
      // Exactly the bytes asked for, poisoned: nothing may read a byte it did not write first.
      const DeviceTensor ws = workspace_of(layer.workspace_bytes_for(tokens));
      DeviceTensor out(DType::kBF16, {tokens, m.config.hidden_size});
      layer.forward(d.hidden.view(), d.logits.view(), out.view(), {stream.get(), as_workspace(ws)});
      stream.sync();
      const HostTensor got = out.to_host();
      const HostTensor want =
          oracle(m.config, host.view(), in, layer.layout_for(tokens), DType::kBF16);
      EXPECT_LE(relative_error(got.view(), want.view()), layer_vs_oracle_tolerance(m.config));
      DeviceTensor routed(DType::kBF16, {tokens, m.config.hidden_size});
      layer.forward_routed(d.hidden.view(), d.routing(), routed.view(),
                           {stream.get(), as_workspace(ws)});
      stream.sync();
      EXPECT_TRUE(bitwise_equal(got, routed.to_host())) << "device routing vs given routing";
      DeviceTensor owned(DType::kBF16, {tokens, m.config.hidden_size});
      convenience.forward(d.hidden.view(), d.logits.view(), owned.view());
      EXPECT_TRUE(bitwise_equal(got, owned.to_host())) << "caller vs owned workspace";
    }
  }
}

TEST(CudaEngineApi, RejectsMissingSmallOrMisalignedWorkspaces) {
  MOERUN_REQUIRE_GPU();
  const Model m = models()[1];
  const HostMoeWeights host = random_weights(m.config, m.config.num_experts, 1);
  const DeviceWeights device(host.view());
  Layer layer(m.config, device.view(), engine_options(64));
  const Inputs in = make_inputs(m.config, host.view(), 64, 2);
  const DeviceInputs d(in);
  DeviceTensor out(DType::kBF16, {64, m.config.hidden_size});
  EXPECT_CONTAINS(error_of([&] { layer.forward(d.hidden.view(), d.logits.view(), out.view()); }),
                  "invalid workspace: expected one the layer owns");
  const DeviceTensor ws = workspace_of(layer.workspace_bytes_for(64) + 512);
  EXPECT_CONTAINS(error_of([&] {
                    layer.forward(d.hidden.view(), d.logits.view(), out.view(),
                                  {nullptr, {ws.view().data(), 1024}});
                  }),
                  "invalid workspace bytes: expected >= ");
  EXPECT_CONTAINS(error_of([&] {
                    layer.forward(d.hidden.view(), d.logits.view(), out.view(), {nullptr, {}});
                  }),
                  "got no workspace");
  auto* misaligned = static_cast<std::byte*>(ws.view().data()) + 16;
  EXPECT_EQ(error_of([&] {
              layer.forward(d.hidden.view(), d.logits.view(), out.view(),
                            {nullptr, {misaligned, ws.view().nbytes() - 16}});
            }),
            "moerun: invalid workspace data: expected a 256-byte aligned address, got an address "
            "16 bytes past a boundary");
  // A tensor of another device is named with both devices.
  const TensorView elsewhere(d.hidden.view().data(), DType::kBF16, d.hidden.view().shape(),
                             {DeviceType::kCuda, 1});
  EXPECT_EQ(error_of([&] {
              layer.forward(elsewhere, d.logits.view(), out.view(), {nullptr, as_workspace(ws)});
            }),
            "moerun: invalid hidden_states device: expected cuda:0, got cuda:1");
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
}

// One layer, forwards in flight on two streams with a workspace each, from one thread and then
// from two: every output equals the one computed alone, bit for bit.
TEST(CudaEngineApi, ConcurrentForwardsOnTwoStreams) {
  MOERUN_REQUIRE_GPU();
  for (const Model& m : {models()[0], models()[1]}) {
    SCOPED_TRACE(m.name);
    const std::uint64_t seed = fresh_seed();
    const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
    const DeviceWeights device(host.view());
    LayerOptions options = engine_options(256);
    options.overlap = true;  // masked forwards wait on counters in their own workspace
    const Layer layer(m.config, device.view(), options);
    constexpr int kStreams = 2;
    const std::int64_t tokens[kStreams] = {96, 256};  // one masked, one contiguous
    std::vector<Inputs> in;
    std::vector<DeviceInputs> d;
    std::vector<DeviceTensor> ws, out;
    std::vector<HostTensor> alone;
    const Stream streams[kStreams];
    for (int i = 0; i < kStreams; ++i) {
      in.push_back(make_inputs(m.config, host.view(), tokens[i], seed + 7 * i));
      d.emplace_back(in.back());
      ws.push_back(workspace_of(layer.workspace_bytes_for(tokens[i])));
      out.emplace_back(DType::kBF16, Shape{tokens[i], m.config.hidden_size});
      layer.forward(d[i].hidden.view(), d[i].logits.view(), out[i].view(),
                    {streams[i].get(), as_workspace(ws[i])});
      streams[i].sync();
      alone.push_back(out[i].to_host());
      EXPECT_LE(relative_error(alone[i].view(), oracle(m.config, host.view(), in[i],
                                                       layer.layout_for(tokens[i]), DType::kBF16)
                                                    .view()),
                layer_vs_oracle_tolerance(m.config));
    }
    auto run = [&](int i, int repeats) {
      for (int r = 0; r < repeats; ++r) {
        layer.forward(d[i].hidden.view(), d[i].logits.view(), out[i].view(),
                      {streams[i].get(), as_workspace(ws[i])});
      }
    };
    for (int i = 0; i < kStreams; ++i) out[i].poison();
    for (int r = 0; r < 8; ++r) {
      for (int i = 0; i < kStreams; ++i) run(i, 1);  // interleaved, no synchronization
    }
    for (int i = 0; i < kStreams; ++i) {
      streams[i].sync();
      EXPECT_TRUE(bitwise_equal(out[i].to_host(), alone[i])) << "one thread, stream " << i;
      out[i].poison();
    }
    std::vector<std::thread> threads;
    for (int i = 0; i < kStreams; ++i) threads.emplace_back(run, i, 8);
    for (auto& t : threads) t.join();
    for (int i = 0; i < kStreams; ++i) {
      streams[i].sync();
      EXPECT_TRUE(bitwise_equal(out[i].to_host(), alone[i])) << "two threads, stream " << i;
    }
  }
}

// Global capture mode rejects any unsafe call (an allocation, a synchronization) made while
// capturing: the engine-API forward makes none. Replays with new routing written into the same
// buffers match the oracle for that routing.
TEST(CudaEngineApi, GraphCaptureInGlobalModeReplaysWithNewRouting) {
  MOERUN_REQUIRE_GPU();
  for (LayoutChoice choice : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
    const Model m = models()[0];
    SCOPED_TRACE(choice == LayoutChoice::kMasked ? "masked" : "contiguous");
    const std::uint64_t seed = fresh_seed();
    const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
    const DeviceWeights device(host.view());
    constexpr std::int64_t kTokens = 80;
    LayerOptions options = engine_options(kTokens, choice);
    options.overlap = choice == LayoutChoice::kMasked;
    const Layer layer(m.config, device.view(), options);
    const Stream stream;
    const Inputs first = make_inputs(m.config, host.view(), kTokens, seed);
    DeviceInputs d(first);
    const DeviceTensor ws = workspace_of(layer.workspace_bytes_for(kTokens));
    DeviceTensor out(DType::kBF16, {kTokens, m.config.hidden_size});
    const ForwardContext context{stream.get(), as_workspace(ws)};
    layer.forward_routed(d.hidden.view(), d.routing(), out.view(), context);  // warm-up
    stream.sync();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    MOERUN_CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal));
    layer.forward_routed(d.hidden.view(), d.routing(), out.view(), context);
    MOERUN_CUDA_CHECK(cudaStreamEndCapture(stream.get(), &graph));
    MOERUN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 3; ++replay) {
      const Inputs in = make_inputs(m.config, host.view(), kTokens, seed + 100 + replay);
      d.hidden.copy_from(in.hidden.view());
      d.ids.copy_from(in.routing.ids.view());
      d.weights.copy_from(in.routing.weights.view());
      out.poison();
      MOERUN_CUDA_CHECK(cudaGraphLaunch(exec, stream.get()));
      stream.sync();
      const HostTensor want =
          oracle(m.config, host.view(), in, layer.layout_for(kTokens), DType::kBF16);
      EXPECT_LE(relative_error(out.to_host().view(), want.view()),
                layer_vs_oracle_tolerance(m.config))
          << "replay " << replay;
    }
    MOERUN_CUDA_CHECK(cudaGraphExecDestroy(exec));
    MOERUN_CUDA_CHECK(cudaGraphDestroy(graph));
  }
}

// Experts placed round-robin over 3 ranks (64 is not a multiple of 3), and SGLang's local ids:
// each rank's partial matches the oracle of the same placement, local ids give the bits of
// global ones.
TEST(CudaEngineApi, ExpertMapAndLocalIds) {
  MOERUN_REQUIRE_GPU();
  const Model m = models()[0];
  const std::uint64_t seed = fresh_seed();
  const HostMoeWeights all = random_weights(m.config, m.config.num_experts, seed);
  constexpr std::int64_t kTokens = 140;
  const Inputs in = make_inputs(m.config, all.view(), kTokens, seed);
  const DeviceInputs d(in);
  for (int placement = 0; placement < 4; ++placement) {
    // 0-2: round-robin ranks of 3; 3: contiguous rank 1 of 4.
    MoeConfig c = m.config;
    c.ep_size = placement < 3 ? 3 : 4;
    c.ep_rank = placement < 3 ? placement : 1;
    if (placement < 3) c.expert_map = round_robin_expert_map(c.num_experts, 3, c.ep_rank);
    SCOPED_TRACE("rank " + std::to_string(c.ep_rank) + " of " + std::to_string(c.ep_size) +
                 (c.expert_map.empty() ? ", contiguous" : ", round robin"));
    const std::vector<std::int32_t> map = c.local_expert_map();
    const HostMoeWeights local = rank_weights(all.view(), map);
    const DeviceWeights device(local.view());
    for (LayoutChoice choice : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
      const Layer layer(c, device.view(), engine_options(kTokens, choice));
      const DeviceTensor ws = workspace_of(layer.workspace_bytes_for(kTokens));
      DeviceTensor global_out(DType::kF32, {kTokens, c.hidden_size});
      layer.forward_routed(d.hidden.view(), d.routing(), global_out.view(),
                           {nullptr, as_workspace(ws)});
      const HostTensor got = global_out.to_host();
      const HostTensor want = oracle(c, local.view(), in, layer.layout_for(kTokens), DType::kF32);
      EXPECT_LE(relative_error(got.view(), want.view()), layer_vs_oracle_tolerance(c));
      const HostTensor local_ids = cpu::map_to_local(in.routing.ids.view(), map);
      const DeviceTensor d_local = DeviceTensor::from_host(local_ids.view());
      DeviceTensor local_out(DType::kF32, {kTokens, c.hidden_size});
      layer.forward_routed(d.hidden.view(), {d_local.view(), d.weights.view(), ExpertIds::kLocal},
                           local_out.view(), {nullptr, as_workspace(ws)});
      EXPECT_TRUE(bitwise_equal(got, local_out.to_host())) << "local ids";
      // The same placement as a per-call device map (vLLM's expert_map).
      const TensorView host_map(const_cast<std::int32_t*>(map.data()), DType::kI32,
                                {c.num_experts});
      const DeviceTensor d_map = DeviceTensor::from_host(host_map);
      DeviceTensor per_call(DType::kF32, {kTokens, c.hidden_size});
      layer.forward_routed(d.hidden.view(),
                           {d.ids.view(), d.weights.view(), ExpertIds::kGlobal, d_map.view()},
                           per_call.view(), {nullptr, as_workspace(ws)});
      EXPECT_TRUE(bitwise_equal(got, per_call.to_host())) << "per-call map";
    }
  }
}

TEST(CudaEngineApi, OutputScale) {
  MOERUN_REQUIRE_GPU();
  for (const Model& m : models()) {
    SCOPED_TRACE(m.name);
    const std::uint64_t seed = fresh_seed();
    const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
    const DeviceWeights device(host.view());
    const Inputs in = make_inputs(m.config, host.view(), 77, seed);
    const DeviceInputs d(in);
    auto run = [&](float scale) {
      MoeConfig c = m.config;
      c.output_scale = scale;
      const Layer layer(c, device.view(), engine_options(77));
      const DeviceTensor ws = workspace_of(layer.workspace_bytes_for(77));
      DeviceTensor out(DType::kBF16, {77, c.hidden_size});
      layer.forward_routed(d.hidden.view(), d.routing(), out.view(), {nullptr, as_workspace(ws)});
      HostTensor got = out.to_host();
      EXPECT_LE(
          relative_error(got.view(),
                         oracle(c, host.view(), in, layer.layout_for(77), DType::kBF16).view()),
          layer_vs_oracle_tolerance(c))
          << "scale " << scale;
      return got;
    };
    const HostTensor plain = run(1.0f), doubled = run(2.0f);
    run(2.5f);
    // Times 2 in fp32 before the rounding is exactly twice the rounded value.
    for (std::int64_t i = 0; i < plain.numel(); ++i) {
      ASSERT_EQ(bf16_to_float(doubled.data<bf16>()[i]), 2.0f * bf16_to_float(plain.data<bf16>()[i]))
          << i;
    }
  }
}

TEST(CudaEngineApi, PrequantizedFp8InputEqualsQuantizingInside) {
  MOERUN_REQUIRE_GPU();
  const Model m = models()[0];
  const std::uint64_t seed = fresh_seed();
  const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
  const DeviceWeights device(host.view());
  for (std::int64_t tokens : {1, 128, 333}) {
    SCOPED_TRACE("T " + std::to_string(tokens));
    const Inputs in = make_inputs(m.config, host.view(), tokens, seed + tokens);
    const DeviceInputs d(in);
    const QuantizedHidden q = quantize_hidden(in.hidden);
    const DeviceTensor codes = DeviceTensor::from_host(q.codes.view());
    const DeviceTensor scales = DeviceTensor::from_host(q.scales.view());
    for (LayoutChoice choice : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
      const Layer layer(m.config, device.view(), engine_options(333, choice));
      const DeviceTensor ws = workspace_of(layer.workspace_bytes_for(tokens));
      DeviceTensor a(DType::kBF16, {tokens, m.config.hidden_size});
      DeviceTensor b(DType::kBF16, {tokens, m.config.hidden_size});
      layer.forward_routed(d.hidden.view(), d.routing(), a.view(), {nullptr, as_workspace(ws)});
      layer.forward_routed({codes.view(), scales.view()}, d.routing(), b.view(),
                           {nullptr, as_workspace(ws)});
      EXPECT_TRUE(bitwise_equal(a.to_host(), b.to_host()));
    }
  }
  // BF16 weights take bf16 activations only.
  const Model bf16 = models()[1];
  const HostMoeWeights bf16_host = random_weights(bf16.config, bf16.config.num_experts, seed);
  const DeviceWeights bf16_device(bf16_host.view());
  const Layer layer(bf16.config, bf16_device.view(), engine_options(8));
  const DeviceTensor codes(DType::kFP8E4M3, {8, bf16.config.hidden_size});
  const DeviceTensor scales(DType::kF32, {8, bf16.config.hidden_size / kQuantGroup});
  const DeviceTensor ids(DType::kI32, {8, bf16.config.top_k()});
  const DeviceTensor weights(DType::kF32, {8, bf16.config.top_k()});
  DeviceTensor out(DType::kBF16, {8, bf16.config.hidden_size});
  EXPECT_EQ(error_of([&] {
              layer.forward_routed({codes.view(), scales.view()}, {ids.view(), weights.view()},
                                   out.view(), {});
            }),
            "moerun: invalid hidden_states dtype: expected bf16 (pre-quantized FP8 input needs "
            "FP8 weights), got fp8_e4m3");
}

// A layer on the last GPU while the thread's current device is 0, beside a layer on GPU 0: both
// match the oracle (each device gets its own kernel attribute opt-ins), and the caller's current
// device is left as it was. T = 1100 reaches the SiLU kernel's 63 KiB shared-memory table.
TEST(CudaEngineApi, LayersOnTwoDevicesInOneProcess) {
  MOERUN_REQUIRE_GPU();
  int count = 0;
  MOERUN_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (count < 2) {
    std::cout << "[  SKIPPED ] needs 2 GPUs, found " << count << "\n";
    GTEST_SKIP() << "needs 2 GPUs, found " << count;
  }
  const Model m = models()[0];
  const std::uint64_t seed = fresh_seed();
  const HostMoeWeights host = random_weights(m.config, m.config.num_experts, seed);
  constexpr std::int64_t kTokens = 1100;
  const Inputs in = make_inputs(m.config, host.view(), kTokens, seed);
  const HostTensor want = oracle(m.config, host.view(), in, Layout::kContiguous, DType::kBF16);
  for (int device_index : {0, count - 1}) {
    SCOPED_TRACE("device " + std::to_string(device_index));
    MOERUN_CUDA_CHECK(cudaSetDevice(device_index));
    {
      const DeviceWeights device(host.view());
      const DeviceInputs d(in);
      const Stream stream;
      const Layer layer(m.config, device.view(), engine_options(kTokens));
      ASSERT_EQ(layer.device(), (Device{DeviceType::kCuda, device_index}));
      const DeviceTensor ws = workspace_of(layer.workspace_bytes_for(kTokens));
      DeviceTensor out(DType::kBF16, {kTokens, m.config.hidden_size});
      MOERUN_CUDA_CHECK(cudaSetDevice(0));  // the caller works on GPU 0
      layer.forward(d.hidden.view(), d.logits.view(), out.view(), {stream.get(), as_workspace(ws)});
      EXPECT_EQ(cuda::current_device(), 0) << "the caller's device is restored";
      MOERUN_CUDA_CHECK(cudaSetDevice(device_index));
      stream.sync();
      EXPECT_LE(relative_error(out.to_host().view(), want.view()),
                layer_vs_oracle_tolerance(m.config));
    }
  }
  MOERUN_CUDA_CHECK(cudaSetDevice(0));
}

}  // namespace
}  // namespace moerun::test
