// SiLU of a bf16 gate as a table lookup: S(g) = g / (1 + exp(-g)) in fp32 depends on g alone, and
// g is a bf16 value (gate_up is stored bf16), so it takes at most 65536 values. The activation
// kernel keeps the ones that need exp in shared memory, each computed with silu_f32 (so bit for
// bit what the direct evaluation gives), and derives the rest:
//   |g| < 2^-26 (bf16 exponent field < kSiluTableMinExponent, zeros and subnormals included):
//       exp(-g) rounds to 1.0f, 1 + 1 = 2 exactly, S = g / 2 = g * 0.5f (exact halving);
//   g >= 32, finite: exp(-g) < 2^-46, 1 + exp(-g) rounds to 1.0f, S = g;
//   g <= -32, infinities and NaN: evaluated directly (rare; exp overflow and NaN paths).
// tests/cpu/silu_bf16_test.cc checks every one of the 65536 inputs against the oracle's formula.
// Plain C++ (host and device) so that the CPU suite can check the mapping without a GPU.
#pragma once

#include <cstdint>

#include "core/portable_math.h"  // MOERUN_HOST_DEVICE

namespace moerun::cuda {

// Biased bf16 (= fp32) exponent fields the table covers: |g| in [2^-26, 2^5).
inline constexpr int kSiluTableMinExponent = 127 - 26;
inline constexpr int kSiluTableMaxExponent = 127 + 4;
// Entries per sign: every mantissa of every covered exponent.
inline constexpr int kSiluTableHalf = (kSiluTableMaxExponent - kSiluTableMinExponent + 1) * 128;
inline constexpr int kSiluTableEntries = 2 * kSiluTableHalf;  // 7936 floats, 31 KiB

// What to do for a gate with bf16 bits `bits`: a table index >= 0, or one of these.
inline constexpr int kSiluHalve = -1;     // S = g * 0.5f
inline constexpr int kSiluIdentity = -2;  // S = g
inline constexpr int kSiluDirect = -3;    // evaluate g / (1 + exp(-g))

MOERUN_HOST_DEVICE constexpr int silu_table_slot(std::uint16_t bits) {
  const int magnitude = bits & 0x7fff;  // exponent field << 7 | mantissa
  const bool negative = (bits & 0x8000) != 0;
  const int offset = magnitude - (kSiluTableMinExponent << 7);
  if (offset < 0) return kSiluHalve;
  if (offset < kSiluTableHalf) return offset + (negative ? kSiluTableHalf : 0);
  if (!negative && magnitude < 0x7f80) return kSiluIdentity;  // finite, >= 32
  return kSiluDirect;
}

// The bf16 bits of the gate that table entry `index` holds S of (inverse of silu_table_slot).
MOERUN_HOST_DEVICE constexpr std::uint16_t silu_table_gate_bits(int index) {
  const bool negative = index >= kSiluTableHalf;
  const int offset = negative ? index - kSiluTableHalf : index;
  return static_cast<std::uint16_t>((negative ? 0x8000 : 0) +
                                    ((kSiluTableMinExponent << 7) + offset));
}

}  // namespace moerun::cuda
