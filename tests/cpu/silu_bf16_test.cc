// The CUDA activation's bf16 SiLU table (cuda/silu_bf16.h), checked on the CPU over every one of
// the 65536 bf16 gates: each entry or shortcut must give the oracle's fp32 S(g) = silu_f32(g)
// (core/portable_math.h) bit for bit. The GPU test compares the kernel with the oracle on random
// data; this one covers the inputs random data rarely reaches (tiny, huge, subnormal, signed
// zeros).
#include "cuda/silu_bf16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <vector>

#include "core/portable_math.h"
#include "moerun/dtype.h"

namespace moerun::cuda {
namespace {

// The oracle's value before the multiplication by up (cpu/activation.cc).
float oracle_silu(float g) { return detail::silu_f32(g); }

bool same_bits(float a, float b) {
  return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

TEST(SiluBf16Table, EveryGateMatchesTheOracle) {
  std::vector<int> table_hits(kSiluTableEntries, 0);
  int halved = 0, identity = 0, direct = 0, mismatches = 0;
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto b = static_cast<std::uint16_t>(bits);
    const float g = bf16_to_float(bf16{b});
    const float expected = oracle_silu(g);
    const int slot = silu_table_slot(b);
    float got = expected;
    if (slot >= 0) {
      ASSERT_LT(slot, kSiluTableEntries) << "bits " << bits;
      ASSERT_EQ(silu_table_gate_bits(slot), b) << "slot " << slot << " does not map back";
      ++table_hits[slot];
      got = oracle_silu(bf16_to_float(bf16{silu_table_gate_bits(slot)}));
    } else if (slot == kSiluHalve) {
      ++halved;
      got = g * 0.5f;
    } else if (slot == kSiluIdentity) {
      ++identity;
      got = g;
    } else {
      ASSERT_EQ(slot, kSiluDirect);
      ++direct;
      continue;
    }
    if (!same_bits(got, expected)) {
      if (++mismatches <= 10) ADD_FAILURE() << "bf16 bits " << bits << " (g = " << g << ")";
    }
  }
  EXPECT_EQ(mismatches, 0);
  for (int i = 0; i < kSiluTableEntries; ++i) EXPECT_EQ(table_hits[i], 1) << "entry " << i;
  // Direct evaluation is for g <= -32, infinities and NaN only: 2 x (256 - 132) exponent fields
  // minus the positive finite ones.
  EXPECT_EQ(direct, (255 - 132) * 128 + 2 * 128);
  EXPECT_EQ(halved, 2 * kSiluTableMinExponent * 128);
  EXPECT_EQ(identity, (255 - 132) * 128);
}

}  // namespace
}  // namespace moerun::cuda
