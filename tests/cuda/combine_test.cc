// CUDA combine vs the CPU oracle, bit for bit (bf16 and f32 outputs).
#include "cpu/combine.h"

#include <gtest/gtest.h>

#include <string>

#include "cuda/combine.h"
#include "cuda_test_util.h"

namespace moerun::test {
namespace {

void check_combine(std::int64_t tokens, std::int64_t hidden, DType out_dtype, bool all_skipped,
                   bool wait, float output_scale = 1.0f) {
  SCOPED_TRACE("T " + std::to_string(tokens) + ", H " + std::to_string(hidden) + ", " +
               std::string(dtype_name(out_dtype)) + (all_skipped ? ", all skipped" : "") +
               (wait ? ", overlap wait" : "") + ", output scale " + std::to_string(output_scale));
  const std::uint64_t seed = fresh_seed();
  constexpr int kTopK = 5;
  constexpr std::int64_t kMMax = 128;
  constexpr int kExperts = 8;
  const std::int64_t rows = kExperts * kMMax;
  const HostTensor down = random_hidden_states(rows, hidden, seed);
  HostTensor src2dst(DType::kI32, {tokens, kTopK}), weights(DType::kF32, {tokens, kTopK});
  std::mt19937_64 rng(seed);
  for (std::int64_t i = 0; i < tokens * kTopK; ++i) {
    const bool skip = all_skipped || std::uniform_real_distribution<>(0, 1)(rng) < 0.2;
    src2dst.data<int>()[i] = skip ? -1 : static_cast<int>(rng() % rows);
    weights.data<float>()[i] = std::uniform_real_distribution<float>(-1.0f, 2.0f)(rng);
  }
  if (tokens > 0 && !all_skipped) src2dst.data<int>()[0] = 0;  // row 0: local expert 0's first row
  HostTensor expected(out_dtype, {tokens, hidden});
  cpu::combine(down.view(), src2dst.view(), weights.view(), expected.view(), output_scale);

  const DeviceTensor d_down = DeviceTensor::from_host(down.view());
  const DeviceTensor d_src2dst = DeviceTensor::from_host(src2dst.view());
  const DeviceTensor d_weights = DeviceTensor::from_host(weights.view());
  DeviceTensor out(out_dtype, {tokens, hidden});
  if (wait) {
    // Counters already final: the wait must pass straight through and change nothing.
    constexpr int kBlockM = 64, kThreshold = 3;
    HostTensor counters(DType::kI32, {kExperts * (kMMax / kBlockM)});
    for (std::int64_t i = 0; i < counters.numel(); ++i) counters.data<int>()[i] = kThreshold;
    const DeviceTensor d_counters = DeviceTensor::from_host(counters.view());
    const cuda::CombineWait w{d_counters.view(), kMMax, kBlockM, kThreshold};
    cuda::combine(d_down.view(), d_src2dst.view(), d_weights.view(), out.view(), output_scale, &w,
                  nullptr);
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  } else {
    cuda::combine(d_down.view(), d_src2dst.view(), d_weights.view(), out.view(), output_scale,
                  nullptr, nullptr);
  }
  const HostTensor got = out.to_host();
  EXPECT_EQ(std::memcmp(got.view().data(), expected.view().data(), got.nbytes()), 0);
}

TEST(CudaCombine, MatchesOracleBitwise) {
  MOERUN_REQUIRE_GPU();
  for (DType out_dtype : {DType::kBF16, DType::kF32}) {
    for (std::int64_t tokens : {0, 1, 129, 1000}) {
      check_combine(tokens, 7168, out_dtype, false, false);
      check_combine(tokens, 200, out_dtype, false, false);
    }
    check_combine(77, 1024, out_dtype, /*all_skipped=*/true, false);
  }
}

// The output scale multiplies the fp32 sum before the one rounding, as the oracle does.
TEST(CudaCombine, OutputScaleMatchesOracleBitwise) {
  MOERUN_REQUIRE_GPU();
  for (DType out_dtype : {DType::kBF16, DType::kF32}) {
    for (float scale : {2.5f, 0.37f}) check_combine(129, 1024, out_dtype, false, false, scale);
  }
  check_combine(300, 512, DType::kBF16, false, /*wait=*/true, 2.5f);
}

TEST(CudaCombine, OverlapWaitPassesThrough) {
  MOERUN_REQUIRE_GPU();
  check_combine(300, 512, DType::kBF16, false, /*wait=*/true);
}

}  // namespace
}  // namespace moerun::test
