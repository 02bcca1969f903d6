// exp, SiLU and sigmoid in fp32 that give the same bits on the host and on the GPU.
//
// Why not std::exp / expf: neither is specified to the bit. glibc's expf (0.502 ulp) is not CUDA's
// expf (2 ulp), nor musl's, nor MSVC's, and a 1-ulp difference in one activation moves a whole
// FP8 group's scale. The oracle and the kernels therefore both call these functions, built only
// from IEEE-754 operations that each round once to nearest: on the device the __f*_rn
// intrinsics (never contracted into other operations), on the host plain operators compiled with
// -ffp-contract=off (cmake/compile_options.cmake) and std::fma for the fused multiply-adds, which
// the standard defines as rounded once (the same as the GPU's FFMA).
//
// exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 in two fused steps (Cody-Waite),
// exp(r) by its degree-7 Taylor polynomial in Horner form (|r| <= 0.35: truncation below 0.1 ulp);
// 2^n applied as two exact powers of two so that subnormal results round once. Accuracy: within
// 1 ulp of the exact value (0.94 ulp at worst over every float; tests/core/portable_math_test.cc).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOERUN_HOST_DEVICE __host__ __device__
#else
#define MOERUN_HOST_DEVICE
#endif

namespace moerun::detail {

MOERUN_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

MOERUN_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// a * b + c, rounded once.
MOERUN_HOST_DEVICE inline float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

MOERUN_HOST_DEVICE inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

MOERUN_HOST_DEVICE inline float float_from_bits(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

// 2^k for k in [-126, 127], exactly.
MOERUN_HOST_DEVICE inline float exact_pow2(int k) {
  return float_from_bits(static_cast<std::uint32_t>(k + 127) << 23);
}

MOERUN_HOST_DEVICE inline std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
#endif
}

// exp(x) = 2^n * p: n = round(x / ln2) (as a float) and p ~ exp(x - n ln2) in [0.7, 1.42].
MOERUN_HOST_DEVICE inline void exp_reduced(float x, float& n_float, float& p) {
  constexpr float kLog2e = 0x1.715476p+0f;
  constexpr float kRoundShift = 0x1.8p+23f;   // adding it rounds to an integer (ties to even)
  constexpr float kLn2Hi = 0x1.62e43p-1f;     // ln 2 rounded to float
  constexpr float kLn2Lo = -0x1.05c610p-29f;  // ln 2 - kLn2Hi, rounded
  n_float = add_rn(fma_rn(x, kLog2e, kRoundShift), -kRoundShift);
  const float r = fma_rn(-n_float, kLn2Lo, fma_rn(-n_float, kLn2Hi, x));
  // Horner on 1/k!, k = 7 .. 1, then + 1.
  p = 0x1.a01a02p-13f;
  p = fma_rn(p, r, 0x1.6c16c2p-10f);
  p = fma_rn(p, r, 0x1.111112p-7f);
  p = fma_rn(p, r, 0x1.555556p-5f);
  p = fma_rn(p, r, 0x1.555556p-3f);
  p = fma_rn(p, r, 0.5f);
  p = fma_rn(p, r, 1.0f);
  p = fma_rn(p, r, 1.0f);
}

// exp(x) where the result may be subnormal, +inf or 0, or x is NaN (|x| > 86).
MOERUN_HOST_DEVICE inline float portable_expf_edge(float x) {
  // Past these, the result is +inf (exp(89) > FLT_MAX) or rounds to 0 (exp(-104) is below half
  // the smallest subnormal). NaN propagates.
  if (x != x) return add_rn(x, x);
  if (x > 89.0f) return float_from_bits(0x7f800000u);  // +inf
  if (x < -104.0f) return 0.0f;
  float n_float, p;
  exp_reduced(x, n_float, p);
  // n in [-150, 128]: two halves in [-75, 64], each an exact power of two. The first product
  // stays normal (exact); the second rounds once, to a subnormal or to +inf where due.
  const int n = static_cast<int>(n_float);
  const int n_first = n / 2;
  return mul_rn(mul_rn(p, exact_pow2(n_first)), exact_pow2(n - n_first));
}

MOERUN_HOST_DEVICE inline float portable_expf(float x) {
  if (!(x >= -86.0f && x <= 86.0f)) return portable_expf_edge(x);
  float n_float, p;
  exp_reduced(x, n_float, p);
  // n in [-124, 124]: p * 2^n is a normal float, so adding n to p's exponent field is the exact
  // product (the edge path's two multiplications give the same bits).
  const int n = static_cast<int>(n_float);
  return float_from_bits(float_bits(p) + (static_cast<std::uint32_t>(n) << 23));
}

// silu(g) = g / (1 + exp(-g)), the activation of stage 5 (DESIGN.md).
MOERUN_HOST_DEVICE inline float silu_f32(float g) {
  return div_rn(g, add_rn(1.0f, portable_expf(-g)));
}

// sigmoid(x) = 1 / (1 + exp(-x)), DeepSeek-V3's routing score.
MOERUN_HOST_DEVICE inline float sigmoid_f32(float x) {
  return div_rn(1.0f, add_rn(1.0f, portable_expf(-x)));
}

}  // namespace moerun::detail
