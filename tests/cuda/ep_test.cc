// Expert parallelism on one GPU through virtual ranks (the same dispatch and combine kernels as
// over NCCL): R = 2, 4, 8, both backends, both layouts, BF16 and FP8, against the single-rank CUDA
// layer (bitwise for all-to-all, whose rows and sums are the same) and the CPU oracle; overlap
// on/off bitwise; CUDA graphs; named errors for waits that time out and receive capacity.
#include "moerun/ep.h"

#include <gtest/gtest.h>

#include <cstring>
#include <iostream>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/tolerances.h"
#include "cpu/ep_layer.h"
#include "cpu/layer_fixture.h"
#include "cuda/ep/ep_layer.h"
#include "cuda/ep/group.h"
#include "cuda/ep/sync.h"
#include "cuda/ep/virtual_transport.h"
#include "cuda/layer.h"
#include "cuda_test_util.h"
#include "ep_fixture.h"
#include "moerun/errors.h"
#include "tolerances.h"

namespace moerun::test {
namespace {

struct EpCase {
  std::string family;  // deepseek-v3 (FP8) or qwen3-30b-a3b (BF16), scaled down
  int ranks;
  EpBackend backend;
  Layout layout;
  bool round_robin;
};

std::string case_name(const ::testing::TestParamInfo<EpCase>& info) {
  const EpCase& c = info.param;
  return c.family.substr(0, c.family.find('-')) + "_R" + std::to_string(c.ranks) + "_" +
         (c.backend == EpBackend::kStandard ? "standard" : "alltoall") + "_" +
         std::string(layout_name(c.layout)) + (c.round_robin ? "_RoundRobin" : "");
}

// Short names in test listings (gtest prints a parameter without PrintTo as raw bytes).
void PrintTo(const EpCase& c, std::ostream* os) {
  *os << c.family << " R" << c.ranks << " " << layout_name(c.layout)
      << (c.round_robin ? " round-robin" : "");
}

LayoutChoice choice_of(Layout layout) {
  return layout == Layout::kMasked ? LayoutChoice::kMasked : LayoutChoice::kContiguous;
}

// One test problem: the model, its placement over R ranks, weights (all E on the device for the
// single-rank layer, and each rank's E_l), and each rank's routed tokens.
struct Problem {
  MoeConfig config;  // ep_size = R
  ExpertPlacement placement;
  HostMoeWeights host;
  std::unique_ptr<DeviceWeights> all;
  RankWeights rank_host;
  std::vector<std::unique_ptr<DeviceWeights>> rank_device;
  std::vector<MoeWeights> rank_views;
  // Per rank: host and device inputs; device outputs start poisoned.
  std::vector<HostTensor> hidden, ids, weights;
  std::vector<DeviceTensor> d_hidden, d_ids, d_weights, d_out;

  Problem(const EpCase& c, const std::vector<std::int64_t>& counts, std::uint64_t seed)
      : config(scaled_config(c.family)),
        placement(c.round_robin ? ExpertPlacement::round_robin(config.num_experts, c.ranks)
                                : ExpertPlacement::contiguous(config.num_experts, c.ranks)) {
    std::int64_t total = 0;
    for (const std::int64_t n : counts) total += n;
    LayerCase lc(config, total, seed);
    add_ep_routing_cases(placement, total, config.top_k(), lc.routing.ids.data<int>());
    host = std::move(lc.weights);
    all = std::make_unique<DeviceWeights>(host.view());
    config.ep_size = c.ranks;
    rank_host = rank_weights(host.view(), placement);
    for (const MoeWeights& w : rank_host.views) {
      rank_device.push_back(std::make_unique<DeviceWeights>(w));
      rank_views.push_back(rank_device.back()->view());
    }
    std::int64_t begin = 0;
    for (const std::int64_t n : counts) {
      hidden.push_back(rows_of(lc.hidden.view(), begin, begin + n));
      ids.push_back(rows_of(lc.routing.ids.view(), begin, begin + n));
      weights.push_back(rows_of(lc.routing.weights.view(), begin, begin + n));
      begin += n;
    }
    upload();
  }

  void upload() {
    d_hidden.clear();
    d_ids.clear();
    d_weights.clear();
    d_out.clear();
    for (std::size_t r = 0; r < hidden.size(); ++r) {
      d_hidden.push_back(DeviceTensor::from_host(hidden[r].view()));
      d_ids.push_back(DeviceTensor::from_host(ids[r].view()));
      d_weights.push_back(DeviceTensor::from_host(weights[r].view()));
    }
  }

  // Poisoned outputs of `rows` rows per rank, and the forward's views.
  std::vector<EpRankIO> io(std::int64_t rows_per_rank = -1) {
    d_out.clear();
    std::vector<EpRankIO> views;
    for (std::size_t r = 0; r < hidden.size(); ++r) {
      const std::int64_t rows = rows_per_rank >= 0 ? rows_per_rank : hidden[r].size(0);
      d_out.emplace_back(DType::kBF16, Shape{rows, config.hidden_size});
      views.push_back({d_hidden[r].view(), d_ids[r].view(), d_weights[r].view(), d_out[r].view()});
    }
    return views;
  }

  std::vector<HostTensor> outputs() const {
    std::vector<HostTensor> out;
    for (const DeviceTensor& t : d_out) out.push_back(t.to_host());
    return out;
  }

  // The single-rank CUDA layer (all E experts) on tokens [hidden, ids, weights].
  HostTensor single_rank(const TensorView& h, const TensorView& i, const TensorView& w,
                         Layout layout) const {
    MoeConfig single = config;
    single.ep_size = 1;
    const std::int64_t tokens = h.size(0);
    cuda::LayerBackend layer(
        single, all->view(),
        {Backend::kCuda, choice_of(layout), std::max<std::int64_t>(1, tokens), false, 0});
    DeviceTensor out(DType::kBF16, {tokens, config.hidden_size});
    if (tokens > 0) {
      const DeviceTensor dh = DeviceTensor::from_host(h), di = DeviceTensor::from_host(i),
                         dw = DeviceTensor::from_host(w);
      layer.forward_routed(dh.view(), TopKRouting{di.view(), dw.view()}, out.view(), nullptr,
                           layer.owned_workspace());
    }
    return out.to_host();
  }
};

EpOptions options_for(const EpCase& c, const Problem& p, std::int64_t max_tokens, bool overlap) {
  EpOptions o;
  o.backend = c.backend;
  o.layout = choice_of(c.layout);
  o.max_tokens_per_rank = max_tokens;
  o.overlap = overlap;
  for (int r = 0; r < c.ranks; ++r) o.expert_maps.push_back(p.placement.expert_map(r));
  o.timeout_s = 5.0;
  return o;
}

double oracle_tolerance(const MoeConfig& c) {
  return c.is_fp8() ? kLayerVsOracleFp8 : kLayerVsOracleBf16;
}

class CudaEpAllToAll : public ::testing::TestWithParam<EpCase> {};
class CudaEpStandard : public ::testing::TestWithParam<EpCase> {};

// Per-rank token counts with a rank that has none; routing with every awkward case (see
// add_ep_routing_cases). Two forwards (the second with new tokens, and a rank receiving none)
// check that epochs advance.
TEST_P(CudaEpAllToAll, EqualsSingleRankLayerBitwise) {
  MOERUN_REQUIRE_GPU();
  const EpCase& c = GetParam();
  const std::uint64_t seed = fresh_seed();
  const std::vector<std::int64_t> all_counts = {5, 0, 19, 3, 1, 7, 12, 2};
  const std::vector<std::int64_t> counts(all_counts.begin(), all_counts.begin() + c.ranks);
  Problem p(c, counts, seed);
  const EpGroup group = EpGroup::virtual_ranks(c.ranks);
  EpLayer plain(group, p.config, p.rank_views, options_for(c, p, 24, false));
  ASSERT_EQ(plain.layout(), c.layout);
  std::vector<HostTensor> first;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {  // new tokens, and a rank that receives none
      for (int r = 0; r < c.ranks; ++r) {
        const HostTensor h = random_hidden_states(p.hidden[r].size(0), p.config.hidden_size,
                                                  seed + 7 + static_cast<std::uint64_t>(r));
        std::memcpy(p.hidden[r].view().data(), h.view().data(), h.nbytes());
        starve_rank(p.placement, c.ranks / 2, p.ids[r].numel(), p.ids[r].data<int>());
      }
      p.upload();
    }
    const std::vector<EpRankIO> io = p.io();
    plain.forward_routed(io, nullptr);
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
    plain.check();
    const std::vector<HostTensor> got = p.outputs();
    for (int r = 0; r < c.ranks; ++r) {
      SCOPED_TRACE("pass " + std::to_string(pass) + ", rank " + std::to_string(r));
      const HostTensor want =
          p.single_rank(p.hidden[r].view(), p.ids[r].view(), p.weights[r].view(), c.layout);
      EXPECT_TRUE(bitwise_equal(got[r], want));
    }
    if (pass == 0) {
      for (const HostTensor& t : got) first.push_back(t.clone());
    }
  }

  // The CPU oracle on the first pass's tokens (other summation orders inside the GEMMs only).
  Problem q(c, counts, seed);
  std::vector<cpu::EpRankTokens> ranks;
  std::vector<HostTensor> outs;
  std::vector<TensorView> out_views;
  for (int r = 0; r < c.ranks; ++r) {
    ranks.push_back({q.hidden[r].view(), q.ids[r].view(), q.weights[r].view()});
    outs.emplace_back(DType::kBF16, Shape{counts[r], p.config.hidden_size});
    out_views.push_back(outs.back().view());
  }
  cpu::ep_forward_all_to_all(p.config, p.placement, p.rank_host.views, ranks, out_views,
                             {c.layout, 0, 0});
  for (int r = 0; r < c.ranks; ++r) {
    if (counts[r] == 0) continue;
    EXPECT_LE(relative_error(first[r].view(), outs[r].view()), oracle_tolerance(p.config))
        << "rank " << r;
  }

  // Single-batch overlap gives the same bits.
  if (c.layout == Layout::kMasked) {
    EpLayer overlapped(group, p.config, p.rank_views, options_for(c, q, 24, true));
    const std::vector<EpRankIO> io = q.io();
    overlapped.forward_routed(io, nullptr);
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
    overlapped.check();
    const std::vector<HostTensor> got = q.outputs();
    for (int r = 0; r < c.ranks; ++r) EXPECT_TRUE(bitwise_equal(got[r], first[r])) << "rank " << r;
  }
}

TEST_P(CudaEpStandard, MatchesSingleRankLayer) {
  MOERUN_REQUIRE_GPU();
  const EpCase& c = GetParam();
  const std::uint64_t seed = fresh_seed();
  constexpr std::int64_t kTokens = 24;
  // Every rank holds the same tokens: one routing, repeated.
  Problem p(c, {kTokens}, seed);
  for (int r = 1; r < c.ranks; ++r) {
    p.hidden.push_back(p.hidden[0].clone());
    p.ids.push_back(p.ids[0].clone());
    p.weights.push_back(p.weights[0].clone());
  }
  p.upload();
  const EpGroup group = EpGroup::virtual_ranks(c.ranks);
  EpLayer layer(group, p.config, p.rank_views, options_for(c, p, kTokens, false));
  const HostTensor want =
      p.single_rank(p.hidden[0].view(), p.ids[0].view(), p.weights[0].view(), c.layout);
  {
    const std::vector<EpRankIO> io = p.io();
    layer.forward_routed(io, nullptr);
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
    layer.check();
    const std::vector<HostTensor> got = p.outputs();
    for (int r = 0; r < c.ranks; ++r) {
      EXPECT_LE(relative_error(got[r].view(), want.view()), kStandardEpVsSingleRank) << r;
      EXPECT_TRUE(bitwise_equal(got[r], got[0])) << "rank " << r << " differs from rank 0";
    }
  }
  // Sharded output: rank r's rows of the same sum.
  {
    EpOptions o = options_for(c, p, kTokens, false);
    o.shard_output = true;
    if (kTokens % c.ranks == 0) {
      EpLayer sharded(group, p.config, p.rank_views, o);
      const std::vector<HostTensor> full = p.outputs();
      const std::vector<EpRankIO> io = p.io(kTokens / c.ranks);
      sharded.forward_routed(io, nullptr);
      MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
      sharded.check();
      const std::vector<HostTensor> got = p.outputs();
      for (int r = 0; r < c.ranks; ++r) {
        const HostTensor rows =
            rows_of(full[0].view(), r * (kTokens / c.ranks), (r + 1) * (kTokens / c.ranks));
        EXPECT_TRUE(bitwise_equal(got[r], rows)) << "shard of rank " << r;
      }
    }
  }
  // Every token's experts on the last rank: the other partials are zeros, the same bits.
  for (int r = 0; r < c.ranks; ++r) {
    int* ids = p.ids[r].data<int>();
    const int local = p.placement.num_local_experts(), k = p.config.top_k();
    for (std::int64_t i = 0; i < kTokens * k; ++i) {
      const int j = static_cast<int>(i % k);
      ids[i] = j < local ? p.placement.global_id(c.ranks - 1, j) : -1;
    }
  }
  p.upload();
  const std::vector<EpRankIO> io = p.io();
  layer.forward_routed(io, nullptr);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  layer.check();
  const HostTensor one_rank =
      p.single_rank(p.hidden[0].view(), p.ids[0].view(), p.weights[0].view(), c.layout);
  const std::vector<HostTensor> got = p.outputs();
  for (int r = 0; r < c.ranks; ++r) EXPECT_TRUE(bitwise_equal(got[r], one_rank)) << r;
}

std::vector<EpCase> cases(EpBackend backend) {
  std::vector<EpCase> out;
  for (const std::string family : {"deepseek-v3", "qwen3-30b-a3b"}) {
    for (const int ranks : {2, 4, 8}) {
      for (const Layout layout : {Layout::kMasked, Layout::kContiguous}) {
        out.push_back({family, ranks, backend, layout, ranks == 4});
      }
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaEpAllToAll, ::testing::ValuesIn(cases(EpBackend::kAllToAll)),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Cases, CudaEpStandard, ::testing::ValuesIn(cases(EpBackend::kStandard)),
                         case_name);

TEST(CudaEpGraph, CapturedForwardReplaysWithNewRouting) {
  MOERUN_REQUIRE_GPU();
  const EpCase c{"deepseek-v3", 4, EpBackend::kAllToAll, Layout::kMasked, true};
  const std::uint64_t seed = fresh_seed();
  Problem p(c, {9, 4, 0, 11}, seed);
  const EpGroup group = EpGroup::virtual_ranks(c.ranks);
  EpLayer layer(group, p.config, p.rank_views, options_for(c, p, 16, /*overlap=*/true));
  cudaStream_t stream = nullptr;
  MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const std::vector<EpRankIO> io = p.io();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  MOERUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  layer.forward_routed(io, stream);
  MOERUN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  MOERUN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    // New routing in the same device buffers.
    Problem fresh(c, {9, 4, 0, 11}, seed + 1 + static_cast<std::uint64_t>(replay));
    for (int r = 0; r < c.ranks; ++r) {
      p.d_ids[r].copy_from(fresh.ids[r].view());
      p.d_out[r].poison();
    }
    MOERUN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
    layer.check();
    for (int r = 0; r < c.ranks; ++r) {
      const HostTensor want =
          p.single_rank(p.hidden[r].view(), fresh.ids[r].view(), p.weights[r].view(), c.layout);
      EXPECT_TRUE(bitwise_equal(p.d_out[r].to_host(), want))
          << "replay " << replay << " rank " << r;
    }
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// With no patience the overlap kernel leaves every block not yet final to the finishing pass:
// still every row once, the same bits as without overlap.
TEST(CudaEpOverlap, FinishingPassSendsWhatTheOverlapLeft) {
  MOERUN_REQUIRE_GPU();
  const EpCase c{"deepseek-v3", 4, EpBackend::kAllToAll, Layout::kMasked, false};
  Problem p(c, {30, 7, 0, 19}, fresh_seed());
  const EpGroup group = EpGroup::virtual_ranks(c.ranks);
  std::vector<HostTensor> want;
  for (const double patience : {-1.0, 0.0, 1.0}) {  // -1: no overlap
    EpOptions o = options_for(c, p, 32, patience >= 0);
    if (patience >= 0) o.overlap_patience_s = patience;
    cuda::ep::EpLayerBackend layer(group.impl()->transport, p.config, p.rank_views, o);
    const std::vector<EpRankIO> io = p.io();
    layer.forward_routed(io, nullptr);
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
    layer.check();
    std::cout << "patience " << patience << " s: " << layer.overlap_fallbacks()
              << " overlap CTAs left blocks to the finishing pass\n";
    const std::vector<HostTensor> got = p.outputs();
    for (int r = 0; r < c.ranks; ++r) {
      if (patience < 0) {
        want.push_back(got[r].clone());  // the reference: no overlap
      } else {
        EXPECT_TRUE(bitwise_equal(got[r], want[r])) << "patience " << patience << " rank " << r;
      }
    }
  }
}

TEST(CudaEpErrors, ReceiveCapacityExceededIsNamed) {
  MOERUN_REQUIRE_GPU();
  const EpCase c{"qwen3-30b-a3b", 2, EpBackend::kAllToAll, Layout::kMasked, false};
  Problem p(c, {200, 200}, fresh_seed());
  // Every token of both ranks picks expert 0: 400 rows for one expert, room for 128.
  for (int r = 0; r < 2; ++r) {
    int* ids = p.ids[r].data<int>();
    for (std::int64_t t = 0; t < 200; ++t) ids[t * p.config.top_k()] = 0;
    for (std::int64_t t = 0; t < 200; ++t) {
      for (int j = 1; j < p.config.top_k(); ++j) ids[t * p.config.top_k() + j] = -1;
    }
  }
  p.upload();
  EpOptions o = options_for(c, p, 200, false);
  o.max_recv_rows = 128;
  const EpGroup group = EpGroup::virtual_ranks(2);
  EpLayer layer(group, p.config, p.rank_views, o);
  const std::vector<EpRankIO> io = p.io();
  layer.forward_routed(io, nullptr);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  const std::string message = error_of([&] { layer.check(); });
  EXPECT_CONTAINS(message, "rank 0 would receive 400 rows");
  EXPECT_CONTAINS(message, "more than its 128");
  EXPECT_NO_THROW(layer.check());  // reported once, then cleared
}

TEST(CudaEpErrors, AWaitForARankThatNeverSignalsTimesOut) {
  MOERUN_REQUIRE_GPU();
  cuda::ep::VirtualTransport transport(2);
  const auto windows = transport.allocate_windows(4096);
  DeviceTensor state(DType::kI32, {16});  // [0] epoch, [4..] the error record
  MOERUN_CUDA_CHECK(cudaMemset(state.view().data(), 0, state.view().nbytes()));
  cuda::ep::RankContext ctx;
  ctx.rank = 0;
  ctx.num_ranks = 2;
  ctx.peers = windows->peers(0);
  ctx.window = windows->local(0);
  ctx.epoch = state.view().data_as<int>();
  ctx.error = reinterpret_cast<cuda::ep::DeviceError*>(state.view().data_as<int>() + 4);
  ctx.timeout_ns = 20'000'000;
  cuda::ep::begin_forward(ctx, nullptr);
  // Rank 0 signals (both windows); rank 1 never does.
  cuda::ep::signal_peers(ctx, cuda::ep::Phase::kDispatch, nullptr);
  cuda::ep::wait_peers(ctx, cuda::ep::Phase::kDispatch, 0, nullptr);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  cuda::ep::DeviceError error{};
  MOERUN_CUDA_CHECK(cudaMemcpy(&error, ctx.error, sizeof error, cudaMemcpyDeviceToHost));
  EXPECT_EQ(cuda::ep::describe(error),
            "expert parallelism: rank 0 timed out in the dispatch phase waiting for rank 1 (its "
            "flag was at forward 0, expected 1)");
}

TEST(CudaEpErrors, RejectsAGroupOfAnotherSize) {
  MOERUN_REQUIRE_GPU();
  const EpCase c{"qwen3-30b-a3b", 2, EpBackend::kAllToAll, Layout::kMasked, false};
  Problem p(c, {4, 4}, fresh_seed());
  const EpGroup group = EpGroup::virtual_ranks(4);
  EXPECT_EQ(
      error_of([&] { EpLayer layer(group, p.config, p.rank_views, options_for(c, p, 4, false)); }),
      "moerun: invalid ep_size: expected 4 (the group's size), got 2");
}

}  // namespace
}  // namespace moerun::test
