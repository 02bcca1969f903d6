// Element types moerun stores, and their exact host conversions.
//
// bf16: round-to-nearest-even, NaN becomes the canonical 0x7FFF (as cuda_bf16.h does).
// fp8 e4m3fn: round-to-nearest-even, saturating to +-448, NaN kept (as the canonical 0x7F)
// (as __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) does). Both are checked bit for bit
// against the CUDA toolkit's host functions in tests/core/dtype_test.cu.
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

namespace moerun {

enum class DType : std::uint8_t { kF32, kBF16, kFP8E4M3, kI32 };

std::size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);

// Storage types: plain bit containers, so that host code never does arithmetic on them by accident.
struct bf16 {
  std::uint16_t bits;
};
struct fp8e4m3 {
  std::uint8_t bits;
};

// Largest finite e4m3fn magnitude; FP8 quantization maps a group's amax onto it.
inline constexpr float kFp8E4M3Max = 448.0f;

inline float bf16_to_float(bf16 x) { return std::bit_cast<float>(std::uint32_t{x.bits} << 16); }

inline bf16 float_to_bf16(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return bf16{0x7fff};
  const std::uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>((bits + rounding_bias) >> 16)};
}

// Rounds a float to the nearest bf16 value and returns it widened again.
inline float round_to_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }

namespace detail {
// e4m3fn code -> value: (-1)^s (1 + m/8) 2^(e-7), subnormals m 2^-9, 0x7F/0xFF NaN. Built at
// compile time (no initialization order to get wrong) and inlined: the CPU oracle decodes every
// weight byte it multiplies.
constexpr std::array<float, 256> make_fp8e4m3_values() {
  std::array<float, 256> t{};
  for (int code = 0; code < 256; ++code) {
    const int exponent = (code >> 3) & 0xf, mantissa = code & 0x7;
    float magnitude;
    if (exponent == 0xf && mantissa == 0x7) {
      magnitude = std::numeric_limits<float>::quiet_NaN();
    } else if (exponent == 0) {
      magnitude = static_cast<float>(mantissa) * 0x1p-9f;
    } else {
      const float scale =
          std::bit_cast<float>(static_cast<std::uint32_t>(exponent - 10 + 127) << 23);
      magnitude = static_cast<float>(8 + mantissa) * scale;
    }
    t[static_cast<std::size_t>(code)] = (code & 0x80) != 0 ? -magnitude : magnitude;
  }
  return t;
}
inline constexpr std::array<float, 256> kFp8E4M3Values = make_fp8e4m3_values();
}  // namespace detail

inline float fp8e4m3_to_float(fp8e4m3 x) { return detail::kFp8E4M3Values[x.bits]; }
fp8e4m3 float_to_fp8e4m3(float x);

// Rounds a float to the nearest e4m3fn value (saturating) and returns it widened again.
inline float round_to_fp8e4m3(float x) { return fp8e4m3_to_float(float_to_fp8e4m3(x)); }

}  // namespace moerun
