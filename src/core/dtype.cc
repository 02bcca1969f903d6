#include "moerun/dtype.h"

#include <string>

#include "moerun/errors.h"

namespace moerun {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kFP8E4M3:
      return 1;
  }
  throw Error("unknown dtype value " + std::to_string(static_cast<int>(dtype)));
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kFP8E4M3:
      return "fp8_e4m3";
    case DType::kI32:
      return "i32";
  }
  return "unknown";
}

fp8e4m3 float_to_fp8e4m3(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  const std::uint32_t magnitude_bits = bits & 0x7fffffffu;
  const float magnitude = std::bit_cast<float>(magnitude_bits);
  // NaN of either sign becomes the canonical 0x7F, as the toolkit's conversions do.
  if (magnitude_bits > 0x7f800000u) return fp8e4m3{0x7f};
  // 464 = 448 + half an ulp; the tie at exactly 464 rounds to even, i.e. to 448.
  if (magnitude > 464.0f) return fp8e4m3{static_cast<std::uint8_t>(sign | 0x7eu)};
  if (magnitude < 0x1p-6f) {
    // Subnormal range: a multiple of 2^-9, rounded to nearest even by the FPU's default mode.
    // The scaling by 2^9 is exact, and 8 * 2^-9 rounds up into the smallest normal, code 0x08.
    const auto code = static_cast<std::uint8_t>(std::nearbyint(magnitude * 512.0f));
    return fp8e4m3{static_cast<std::uint8_t>(sign | code)};
  }
  // Normal range: keep 3 mantissa bits with round-to-nearest-even on the 20 dropped bits; a carry
  // moves into the exponent, as it should. The exponent rebias is 127 - 7 = 120.
  const std::uint32_t rounded = magnitude_bits + 0x7ffffu + ((magnitude_bits >> 20) & 1u);
  const auto code = static_cast<std::uint8_t>((rounded >> 20) - (120u << 3));
  return fp8e4m3{static_cast<std::uint8_t>(sign | code)};
}

}  // namespace moerun
