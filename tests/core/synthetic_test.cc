// The synthetic weights: generating a subset of the experts gives those experts' values exactly
// (the others are zeros with FP8 block scales of 1, valid for a layer's finiteness check), FP8
// codes are never NaN, and the weights have the spread they promise.
#include "core/synthetic.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/checks.h"
#include "moerun/errors.h"
#include "test_util.h"

namespace moerun {
namespace {

MoeConfig small_config(DType dtype) {
  MoeConfig c = model_preset("small");
  c.hidden_size = 256;
  c.intermediate_size = 128;
  c.num_experts = 8;
  c.weight_dtype = dtype;
  return c;
}

// Bytes of expert `e` of an [E, ...] tensor.
const std::byte* expert_bytes(const HostTensor& t, int e) {
  return static_cast<const std::byte*>(t.view().data()) + t.nbytes() / t.size(0) * e;
}

bool expert_is_zero(const HostTensor& t, int e) {
  const std::byte* p = expert_bytes(t, e);
  for (std::size_t i = 0; i < t.nbytes() / t.size(0); ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  return true;
}

// Whether every f32 of expert `e` of an [E, ...] f32 tensor is `value`.
bool expert_is_all(const HostTensor& t, int e, float value) {
  const auto* p = reinterpret_cast<const float*>(expert_bytes(t, e));
  for (std::int64_t i = 0; i < t.numel() / t.size(0); ++i) {
    if (p[i] != value) return false;
  }
  return true;
}

TEST(RandomWeights, SubsetEqualsTheFullGenerationOnItsExperts) {
  for (DType dtype : {DType::kFP8E4M3, DType::kBF16}) {
    const MoeConfig c = small_config(dtype);
    const std::uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + ", " + std::string(dtype_name(dtype)));
    const HostMoeWeights full = random_weights(c, c.num_experts, seed);
    const std::vector<bool> wanted{false, true, false, false, true, true, false, false};
    const HostMoeWeights part = random_weights(c, c.num_experts, seed, {}, wanted);
    struct Pair {
      const HostTensor *full, *part;
      bool scale;
    };
    const Pair tensors[] = {{&full.w13, &part.w13, false},
                            {&full.w13_scale, &part.w13_scale, true},
                            {&full.w2, &part.w2, false},
                            {&full.w2_scale, &part.w2_scale, true}};
    for (const auto& [f, p, scale] : tensors) {
      if (!f->defined()) continue;
      for (int e = 0; e < c.num_experts; ++e) {
        if (wanted[e]) {
          EXPECT_EQ(std::memcmp(expert_bytes(*f, e), expert_bytes(*p, e), f->nbytes() / f->size(0)),
                    0)
              << "expert " << e;
        } else if (scale) {
          EXPECT_TRUE(expert_is_all(*p, e, 1.0f)) << "expert " << e;
        } else {
          EXPECT_TRUE(expert_is_zero(*p, e)) << "expert " << e;
        }
      }
    }
    EXPECT_TRUE(test::bitwise_equal(full.correction_bias, part.correction_bias));
    // A layer built on the subset passes its finiteness check (scales of 0 would not).
    EXPECT_NO_THROW(detail::check_weight_values(part.view()));
  }
}

TEST(RandomWeights, Fp8CodesAreFiniteAndDequantizeToTheTargetSpread) {
  const MoeConfig c = small_config(DType::kFP8E4M3);
  const HostMoeWeights w = random_weights(c, c.num_experts, test::fresh_seed());
  const std::int64_t h = c.hidden_size, k_blocks = h / kQuantGroup;
  double sum = 0.0;
  for (std::int64_t i = 0; i < w.w13.numel(); ++i) {
    const float code = fp8e4m3_to_float(w.w13.data<fp8e4m3>()[i]);
    ASSERT_TRUE(std::isfinite(code)) << i;
    const std::int64_t row = i / h, col = i % h;  // row over all experts
    const float scale =
        w.w13_scale.data<float>()[(row / kQuantGroup) * k_blocks + col / kQuantGroup];
    sum += static_cast<double>(code) * scale * code * scale;
  }
  // Target 1 / sqrt(fan_in) with +-25% scale jitter: the RMS stays within 20% of it.
  const double rms = std::sqrt(sum / static_cast<double>(w.w13.numel()));
  EXPECT_NEAR(rms * std::sqrt(static_cast<double>(h)), 1.0, 0.2);
}

TEST(RandomWeights, RejectsAMaskOfTheWrongLength) {
  const MoeConfig c = small_config(DType::kBF16);
  const std::string m = test::error_of([&] { random_weights(c, c.num_experts, 1, {}, {true}); });
  EXPECT_CONTAINS(m, "invalid experts to generate: expected 8 flags, got 1");
}

}  // namespace
}  // namespace moerun
