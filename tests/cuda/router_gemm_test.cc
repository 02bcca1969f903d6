// The CUDA router GEMM vs the CPU oracle, bit for bit (routing downstream is discontinuous in the
// logits, so the device must reproduce them, not approximate them).
#include "cpu/router_gemm.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/synthetic.h"
#include "cuda/router_gemm.h"
#include "cuda_test_util.h"
#include "moerun/errors.h"

namespace moerun::test {
namespace {

// Widths that are not tile multiples, one token, one expert, and the benchmark models' sizes.
TEST(CudaRouterGemm, MatchesOracleBitwise) {
  MOERUN_REQUIRE_GPU();
  struct Shape3 {
    std::int64_t tokens, experts, hidden;
  };
  for (const Shape3 s : {Shape3{1, 1, 8}, Shape3{33, 8, 200}, Shape3{100, 33, 1000},
                         Shape3{257, 128, 2048}, Shape3{64, 256, 7168}, Shape3{31, 1024, 72}}) {
    SCOPED_TRACE("T " + std::to_string(s.tokens) + ", E " + std::to_string(s.experts) + ", H " +
                 std::to_string(s.hidden));
    const std::uint64_t seed = fresh_seed();
    const HostTensor hidden = random_hidden_states(s.tokens, s.hidden, seed);
    HostTensor weight(DType::kF32, {s.experts, s.hidden});
    for (std::int64_t i = 0; i < weight.numel(); ++i) {
      weight.data<float>()[i] = 0.05f * standard_normal(seed, 77, static_cast<std::uint64_t>(i));
    }
    const HostTensor expected = cpu::router_logits(hidden.view(), weight.view());
    const DeviceTensor d_hidden = DeviceTensor::from_host(hidden.view());
    const DeviceTensor d_weight = DeviceTensor::from_host(weight.view());
    DeviceTensor logits(DType::kF32, {s.tokens, s.experts});  // poisoned
    cuda::router_gemm(d_hidden.view(), d_weight.view(), logits.view(), nullptr);
    const HostTensor got = logits.to_host();
    std::int64_t mismatches = 0;
    for (std::int64_t i = 0; i < got.numel(); ++i) {
      std::uint32_t a, b;
      std::memcpy(&a, got.data<float>() + i, 4);
      std::memcpy(&b, expected.data<float>() + i, 4);
      mismatches += a != b;
    }
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(CudaRouterGemm, ZeroTokensAndBadShapes) {
  MOERUN_REQUIRE_GPU();
  DeviceTensor hidden(DType::kBF16, {0, 64}), weight(DType::kF32, {8, 64}),
      logits(DType::kF32, {0, 8});
  cuda::router_gemm(hidden.view(), weight.view(), logits.view(), nullptr);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  DeviceTensor h2(DType::kBF16, {4, 64}), wrong(DType::kF32, {4, 9});
  try {
    cuda::router_gemm(h2.view(), weight.view(), wrong.view(), nullptr);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("router_logits"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moerun::test
