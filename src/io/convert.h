// Element conversions from file dtypes to moerun's: exact widenings (BF16/F16 -> f32) and
// round-to-nearest-even narrowings (F16/F32 -> bf16). Sources may be unaligned (a tensor's offset
// in a safetensors buffer need not be a multiple of its element size).
#pragma once

#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"
#include "moerun/dtype.h"

namespace moerun::io {

// IEEE binary16 -> float, exactly (subnormals, infinities and NaN included).
float f16_to_float(std::uint16_t bits);

// `count` elements of BF16, F16 or F32 at `src` -> bf16 (a plain copy for BF16).
void convert_to_bf16(const std::byte* src, StDType src_dtype, std::int64_t count, bf16* dst);
// `count` elements of BF16, F16 or F32 at `src` -> f32 (exact).
void convert_to_f32(const std::byte* src, StDType src_dtype, std::int64_t count, float* dst);

}  // namespace moerun::io
