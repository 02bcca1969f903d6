// Device helpers shared by the stage kernels: 16-byte vectors of bf16/fp8, exact conversions, and
// the FP8 1x128 quantization step in the oracle's exact fp32 operations.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace moerun::cuda {

// Largest finite e4m3fn magnitude and the amax floor (mirror cpu/quant.h: kFp8E4M3Max, kAmaxFloor).
inline constexpr float kDeviceFp8Max = 448.0f;
inline constexpr float kDeviceAmaxFloor = 1e-10f;

__device__ __forceinline__ float bf16_bits_to_float(std::uint16_t bits) {
  return __uint_as_float(static_cast<std::uint32_t>(bits) << 16);
}

// 8 bf16 in a uint4 -> 8 floats (exact).
__device__ __forceinline__ void unpack_bf16x8(const uint4& v, float (&out)[8]) {
  const std::uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

// Round-to-nearest-even to bf16 (NaN -> 0x7fff), as the host's float_to_bf16.
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

__device__ __forceinline__ uint4 pack_bf16x8(const float (&in)[8]) {
  return make_uint4(pack_bf16x2(in[0], in[1]), pack_bf16x2(in[2], in[3]), pack_bf16x2(in[4], in[5]),
                    pack_bf16x2(in[6], in[7]));
}

// e4m3fn, round-to-nearest-even, saturating to +-448 (cvt.rn.satfinite.e4m3x2.f32): the host's
// float_to_fp8e4m3 bit for bit.
__device__ __forceinline__ std::uint32_t pack_fp8x4(float a, float b, float c, float d) {
  const std::uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
  const std::uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(c, d), __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

// Two e4m3 codes (low byte first) -> two bf16 (exact: every e4m3 value is a bf16 value).
__device__ __forceinline__ std::uint32_t fp8x2_to_bf16x2(std::uint16_t codes) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(codes, __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  return pack_bf16x2(f.x, f.y);
}

// 16 e4m3 codes -> 16 bf16 (two uint4).
__device__ __forceinline__ void fp8x16_to_bf16x16(const uint4& v, uint4& lo, uint4& hi) {
  const std::uint32_t w[4] = {v.x, v.y, v.z, v.w};
  std::uint32_t out[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = fp8x2_to_bf16x2(static_cast<std::uint16_t>(w[i] & 0xffffu));
    out[2 * i + 1] = fp8x2_to_bf16x2(static_cast<std::uint16_t>(w[i] >> 16));
  }
  lo = make_uint4(out[0], out[1], out[2], out[3]);
  hi = make_uint4(out[4], out[5], out[6], out[7]);
}

// The oracle's FP8 1x128 step for one thread's kValues values of a 128-column group that
// 128 / kValues consecutive lanes share (lanes g*L .. g*L+L-1 hold group g): amax over the group,
// floored; codes fp8(x * (448 / amax)) into kValues / 4 words; scale amax / 448. Exactly
// cpu::quantize_row_fp8's fp32 operations (max is exact and order-free; division and product are
// IEEE round-to-nearest, no contraction). All 32 lanes must call it (full-mask shuffles); lanes
// without data pass zeros.
template <int kValues>
__device__ __forceinline__ void quantize_fp8_group(const float (&x)[kValues], float& scale,
                                                   std::uint32_t (&words)[kValues / 4]) {
  static_assert(kValues % 4 == 0 && 128 % kValues == 0 && 128 / kValues <= 32,
                "a 128-column group must span whole lanes of one warp, 4 codes per word");
  constexpr int kLanesPerGroup = 128 / kValues;
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kValues; ++i) amax = fmaxf(amax, fabsf(x[i]));
#pragma unroll
  for (int offset = kLanesPerGroup / 2; offset >= 1; offset /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  }
  amax = fmaxf(amax, kDeviceAmaxFloor);
  const float inverse_scale = __fdiv_rn(kDeviceFp8Max, amax);
  scale = __fdiv_rn(amax, kDeviceFp8Max);
#pragma unroll
  for (int i = 0; i < kValues / 4; ++i) {
    words[i] =
        pack_fp8x4(__fmul_rn(x[4 * i], inverse_scale), __fmul_rn(x[4 * i + 1], inverse_scale),
                   __fmul_rn(x[4 * i + 2], inverse_scale), __fmul_rn(x[4 * i + 3], inverse_scale));
  }
}

}  // namespace moerun::cuda
