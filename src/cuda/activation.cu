// SiLU-and-mul kernel, fused with the FP8 1x128 re-quantization of its output.
//
// Exactness. The oracle computes g / (1.0f + std::exp(-g)) * up with std::exp(float), which is
// glibc's expf: evaluated in double from a 32-entry table of 2^(i/32) and a degree-3 polynomial,
// then rounded to float (glibc sysdeps/ieee754/flt-32/e_expf.c, unchanged since glibc 2.28). It
// is not correctly rounded (0.502 ulp): on this repository's CI machine it differs from the
// correctly rounded exp on about 6 in 10^4 inputs, and CUDA's expf (2 ulp) differs far more
// often. Either would move whole FP8 groups' scales by an ulp now and then, so the kernel runs
// glibc's algorithm itself, in the same double operations. A host replica of this code matched
// std::exp(float) on 4 * 10^8 random inputs (with and without fused multiply-adds in the
// polynomial, which is what glibc's FMA variant changes). It costs ~10 double operations per
// element; H200's FP64 rate keeps that well under the kernel's memory time.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/activation.h"
#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

// glibc's __exp2f_data.tab: tab[i] = bits(2^(i/32)) - (i << 47).
__device__ const unsigned long long kExp2fTable[32] = {
    0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull,
    0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull,
    0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
    0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,
    0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull,
    0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
    0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,
    0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull,
};

// glibc's expf, operation for operation (see the file comment).
__device__ __forceinline__ float expf_glibc(float x) {
  const unsigned ux = __float_as_uint(x);
  const unsigned abstop = (ux >> 20) & 0x7ffu;
  if (abstop >= 0x42bu) {  // |x| >= 88 or NaN
    if (ux == 0xff800000u) return 0.0f;
    if (abstop >= 0x7f8u) return x + x;
    if (x > 0x1.62e42ep6f) return __int_as_float(0x7f800000);  // overflow: +inf
    if (x < -0x1.9fe368p6f) return 0.0f;                       // underflow
  }
  constexpr double kInvLn2N = 0x1.71547652b82fep+0 * 32;
  constexpr double kShift = 0x1.8p+52;
  constexpr double kC0 = 0x1.c6af84b912394p-5 / 32 / 32 / 32;
  constexpr double kC1 = 0x1.ebfce50fac4f3p-3 / 32 / 32;
  constexpr double kC2 = 0x1.62e42ff0c52d6p-1 / 32;
  const double xd = static_cast<double>(x);
  // x * 32 / ln2 = k + r, |r| <= 1/2, k rounded to nearest by the shift trick.
  const double z = __dmul_rn(kInvLn2N, xd);
  double kd = __dadd_rn(z, kShift);
  const auto ki = static_cast<unsigned long long>(__double_as_longlong(kd));
  kd = __dadd_rn(kd, -kShift);
  const double r = __dadd_rn(z, -kd);
  // exp(x) = 2^(k/32) * 2^(r/32) ~= s * (C0 r^3 + C1 r^2 + C2 r + 1)
  const unsigned long long t = kExp2fTable[ki % 32] + (ki << 47);
  const double s = __longlong_as_double(static_cast<long long>(t));
  const double zc = __fma_rn(kC0, r, kC1);
  const double r2 = __dmul_rn(r, r);
  double y = __fma_rn(kC2, r, 1.0);
  y = __fma_rn(zc, r2, y);
  y = __dmul_rn(y, s);
  return __double2float_rn(y);
}

__device__ __forceinline__ float silu_mul(float g, float u) {
  return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf_glibc(-g))), u);
}

struct ActParams {
  const std::uint16_t* gate_up;  // [rows, 2I] bf16
  void* out;                     // [rows, I] bf16 or fp8
  float* out_scale;              // FP8: [rows, I / 128]
  long long rows;
  int inter;
  const int* masked_m;   // masked
  long long m_max;       // masked; 0 = contiguous
  const int* m_indices;  // contiguous
};

constexpr int kThreads = 128;
constexpr int kColumns = kThreads * 8;

// Launch: grid (ceil(I / 1024), R) with R row-strided blocks, kThreads threads; each thread 8
// columns (16-byte loads of gate and up). FP8: 16 lanes share one 128-column group.
template <bool kFp8>
__global__ void __launch_bounds__(kThreads) silu_and_mul_kernel(ActParams p) {
  const int column = (blockIdx.x * kThreads + threadIdx.x) * 8;
  const bool active = column < p.inter;
  for (long long row = blockIdx.y; row < p.rows; row += gridDim.y) {
    bool valid;
    if (p.m_max > 0) {
      const long long e = row / p.m_max;
      valid = row - e * p.m_max < p.masked_m[e];
    } else {
      valid = p.m_indices[row] >= 0;
    }
    if (!valid) continue;  // uniform over the block: rows without a token are never touched
    float y[8] = {};
    if (active) {
      const std::uint16_t* src = p.gate_up + row * 2 * p.inter + column;
      const uint4 gv = *reinterpret_cast<const uint4*>(src);
      const uint4 uv = *reinterpret_cast<const uint4*>(src + p.inter);
      float g[8], u[8];
      unpack_bf16x8(gv, g);
      unpack_bf16x8(uv, u);
#pragma unroll
      for (int i = 0; i < 8; ++i) y[i] = silu_mul(g[i], u[i]);
    }
    if constexpr (kFp8) {
      float scale;
      const uint2 codes = quantize_fp8x8_group16(y, scale);  // all lanes: full-mask shuffles
      if (active) {
        auto* out = static_cast<std::uint8_t*>(p.out) + row * p.inter + column;
        *reinterpret_cast<uint2*>(out) = codes;
        if (threadIdx.x % 16 == 0) p.out_scale[row * (p.inter / 128) + column / 128] = scale;
      }
    } else if (active) {
      auto* out = static_cast<std::uint16_t*>(p.out) + row * p.inter + column;
      *reinterpret_cast<uint4*>(out) = pack_bf16x8(y);
    }
  }
}

int multiprocessors() {
  static const int count = [] {
    int device = 0, sms = 0;
    MOERUN_CUDA_CHECK(cudaGetDevice(&device));
    MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }();
  return count;
}

}  // namespace

void silu_and_mul(const TensorView& gate_up, const RowSet& rows, const TensorView& out,
                  const TensorView& out_scale, cudaStream_t stream) {
  check_arg(gate_up.dtype() == DType::kBF16 && gate_up.is_contiguous() &&
                gate_up.device().type == DeviceType::kCuda,
            "gate_up", "contiguous bf16 on cuda", gate_up.shape_string());
  const std::int64_t width = gate_up.size(gate_up.ndim() - 1);
  check_arg(width % 16 == 0 && width > 0, "gate_up columns", "2I with I a multiple of 8", width);
  const std::int64_t inter = width / 2;
  const std::int64_t n_rows = gate_up.numel() / width;
  const bool fp8 = out.dtype() == DType::kFP8E4M3;
  check_arg(fp8 || out.dtype() == DType::kBF16, "activation out dtype", "bf16 or fp8_e4m3",
            dtype_name(out.dtype()));
  check_arg(out.numel() == n_rows * inter && out.size(out.ndim() - 1) == inter &&
                out.is_contiguous() && out.device().type == DeviceType::kCuda,
            "activation out", "contiguous [rows, I = " + std::to_string(inter) + "] on cuda",
            out.shape_string());
  if (fp8) {
    check_arg(inter % kQuantGroup == 0, "intermediate_size", "a multiple of 128 for FP8", inter);
    check_arg(out_scale.defined() && out_scale.dtype() == DType::kF32 &&
                  out_scale.numel() == n_rows * (inter / kQuantGroup) &&
                  out_scale.device().type == DeviceType::kCuda,
              "activation out_scale", "f32 [rows, I / 128] on cuda",
              out_scale.defined() ? out_scale.shape_string() : std::string("none"));
  }
  ActParams p{};
  if (rows.layout == Layout::kMasked) {
    check_arg(rows.m_max > 0 && n_rows % rows.m_max == 0, "m_max",
              "a positive divisor of the rows (" + std::to_string(n_rows) + ")", rows.m_max);
    check_tensor(rows.masked_m, "masked_m", DType::kI32, {n_rows / rows.m_max}, DeviceType::kCuda);
    p.masked_m = rows.masked_m.data_as<const int>();
    p.m_max = rows.m_max;
  } else {
    check_tensor(rows.m_indices, "m_indices", DType::kI32, {n_rows}, DeviceType::kCuda);
    p.m_indices = rows.m_indices.data_as<const int>();
  }
  if (n_rows == 0) return;
  p.gate_up = static_cast<const std::uint16_t*>(gate_up.data());
  p.out = out.data();
  p.out_scale = fp8 ? out_scale.data_as<float>() : nullptr;
  p.rows = n_rows;
  p.inter = static_cast<int>(inter);
  const auto column_blocks = static_cast<unsigned>(ceil_div<std::int64_t>(inter, kColumns));
  // Enough blocks to fill the machine a few times over; each walks rows with stride gridDim.y.
  const std::int64_t target_blocks = std::int64_t{16} * multiprocessors();
  const auto row_blocks = static_cast<unsigned>(
      std::clamp<std::int64_t>(ceil_div<std::int64_t>(target_blocks, column_blocks), 1,
                               std::min<std::int64_t>(n_rows, 65535)));
  const dim3 grid(column_blocks, row_blocks);
  if (fp8) {
    silu_and_mul_kernel<true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    silu_and_mul_kernel<false><<<grid, kThreads, 0, stream>>>(p);
  }
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda
