// The production path's start: an NCCL group of one rank (a real communicator, symmetric windows,
// LSA peer pointers, NCCL's all-reduce and reduce-scatter) runs a forward of each backend and
// matches the single-rank layer bit for bit (one rank: the same rows, the same sums).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cpu/layer_fixture.h"
#include "cuda/layer.h"
#include "cuda_test_util.h"
#include "moerun/ep.h"

namespace moerun::test {
namespace {

// Whether two host tensors hold the same bytes.
TEST(CudaEpNccl, OneRankGroupMatchesSingleRankLayer) {
  MOERUN_REQUIRE_GPU();
  // NOTE: NVLink multicast stays off wherever moerun starts NCCL (it can take shared GPUs down).
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  const std::uint64_t seed = fresh_seed();
  for (const std::string family : {"deepseek-v3", "qwen3-30b-a3b"}) {
    MoeConfig config = scaled_config(family);
    LayerCase lc(config, 37, seed);
    const DeviceWeights weights(lc.weights.view());
    const DeviceTensor hidden = DeviceTensor::from_host(lc.hidden.view());
    const DeviceTensor ids = DeviceTensor::from_host(lc.routing.ids.view());
    const DeviceTensor topk_weights = DeviceTensor::from_host(lc.routing.weights.view());
    const EpGroup group = EpGroup::create_nccl(EpGroup::new_unique_id(), 0, 1);
    ASSERT_EQ(group.transport_name(), "nccl");
    for (const EpBackend backend : {EpBackend::kAllToAll, EpBackend::kStandard}) {
      for (const LayoutChoice layout : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
        SCOPED_TRACE(family + ", " + std::string(ep_backend_name(backend)) + ", layout " +
                     std::to_string(static_cast<int>(layout)));
        cuda::LayerBackend single(config, weights.view(), {Backend::kCuda, layout, 37, false, 0});
        DeviceTensor want(DType::kBF16, {37, config.hidden_size});
        single.forward_routed(hidden.view(), TopKRouting{ids.view(), topk_weights.view()},
                              want.view(), nullptr, single.owned_workspace());
        EpOptions options;
        options.backend = backend;
        options.layout = layout;
        options.max_tokens_per_rank = 37;
        options.timeout_s = 5.0;
        EpLayer layer(group, config, {weights.view()}, options);
        DeviceTensor out(DType::kBF16, {37, config.hidden_size});
        const std::vector<EpRankIO> io = {
            {hidden.view(), ids.view(), topk_weights.view(), out.view()}};
        layer.forward_routed(io, nullptr);
        MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
        layer.check();
        EXPECT_TRUE(bitwise_equal(out.to_host(), want.to_host()));
      }
    }
  }
}

}  // namespace
}  // namespace moerun::test
