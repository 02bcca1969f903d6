#include "io/convert.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "moerun/errors.h"

namespace moerun::io {

namespace {

template <class T>
T load(const std::byte* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

float element_to_float(const std::byte* src, StDType dtype, std::int64_t i) {
  switch (dtype) {
    case StDType::kBF16:
      return bf16_to_float(bf16{load<std::uint16_t>(src + 2 * i)});
    case StDType::kF16:
      return f16_to_float(load<std::uint16_t>(src + 2 * i));
    case StDType::kF32:
      return load<float>(src + 4 * i);
    default:
      throw Error("no float conversion from " + std::string(st_dtype_name(dtype)));
  }
}

}  // namespace

float f16_to_float(std::uint16_t bits) {
  const bool negative = (bits & 0x8000u) != 0;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  float magnitude;
  if (exponent == 0x1f) {
    magnitude =
        mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // subnormal: m * 2^-24
  } else {
    magnitude = std::ldexp(static_cast<float>(1024 + mantissa), exponent - 25);
  }
  return negative ? -magnitude : magnitude;
}

void convert_to_bf16(const std::byte* src, StDType src_dtype, std::int64_t count, bf16* dst) {
  if (src_dtype == StDType::kBF16) {
    std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(bf16));
    return;
  }
  for (std::int64_t i = 0; i < count; ++i) {
    dst[i] = float_to_bf16(element_to_float(src, src_dtype, i));
  }
}

void convert_to_f32(const std::byte* src, StDType src_dtype, std::int64_t count, float* dst) {
  if (src_dtype == StDType::kF32) {
    std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(float));
    return;
  }
  for (std::int64_t i = 0; i < count; ++i) dst[i] = element_to_float(src, src_dtype, i);
}

}  // namespace moerun::io
