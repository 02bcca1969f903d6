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
// polynomial, which is what glibc's FMA variant changes).
//
// Speed. That evaluation is ~40 instructions per element (double operations, a table load, an
// IEEE division), which made the first kernel issue-bound at ~1.6 TB/s. But S(g) = g / (1 +
// exp(-g)) depends only on the bf16 gate, so with enough rows the kernel fills a 31 KiB shared
// table with S over the bf16 gates that need exp (silu_bf16.h; each entry computed by the same
// exact evaluation, so the result is bit for bit unchanged) and reads it per element. Small
// launches skip the table and evaluate directly. Either way: 16-byte loads, warps walking (row,
// 1024-column) items so that few or long rows still spread over every SM, the next item
// prefetched into L2, 16 FP8 codes per 16-byte store, and only rows holding tokens visited.
// H200, T 8192 (moerun bench, 2026-11-25): 2.2-3.0 TB/s, 53-72% of the measured copy bandwidth.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/activation.h"
#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/permute.h"
#include "cuda/silu_bf16.h"
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

// S(g) = g / (1 + exp(-g)) in the oracle's fp32 operations.
__device__ __forceinline__ float silu_direct(float g) {
  return __fdiv_rn(g, __fadd_rn(1.0f, expf_glibc(-g)));
}

struct ActParams {
  const std::uint16_t* gate_up;  // [rows, 2I] bf16
  void* out;                     // [rows, I] bf16 or fp8
  float* out_scale;              // FP8: [rows, I / 128]
  long long rows;
  int inter;
  int pieces;            // kCols-column pieces per row: I / kCols
  const int* masked_m;   // masked: [experts]
  int experts;           // masked
  long long m_max;       // masked; 0 = contiguous
  const int* m_indices;  // contiguous: [rows]
};

// Pieces per lane in one item (2 x 64 bytes of gate_up loaded before computing). Measured on the
// H200 (2026-11-25, T 8192): 1 piece with the next item double-buffered in registers was 10-20%
// slower; 2 with the L2 bulk prefetch of the next item (kept) ~3% faster than without.
constexpr int kUnroll = 2;
// Table path: one block of 768 threads per SM fills the 31 KiB table once (about 10 entries per
// thread) and keeps it for every item it walks. (1024 threads cap registers at 64: BF16 spills.)
constexpr int kTableThreads = 768;
// Direct path (little work: the table would not pay for itself): small blocks, many SMs.
constexpr int kDirectThreads = 256;
// Elements (rows that can hold tokens x I) from which the table path is used: filling the table
// costs about what the direct path spends on 2M elements.
constexpr long long kTableMinElements = 1ll << 21;

// Unpacks kCols bf16 (kCols / 8 16-byte vectors) into raw bits and floats.
template <int kCols>
__device__ __forceinline__ void unpack_piece(const uint4 (&v)[kCols / 8],
                                             std::uint16_t (&bits)[kCols], float (&f)[kCols]) {
#pragma unroll
  for (int q = 0; q < kCols / 8; ++q) {
    const std::uint32_t words[4] = {v[q].x, v[q].y, v[q].z, v[q].w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      bits[q * 8 + 2 * i] = static_cast<std::uint16_t>(words[i] & 0xffffu);
      bits[q * 8 + 2 * i + 1] = static_cast<std::uint16_t>(words[i] >> 16);
      f[q * 8 + 2 * i] = __uint_as_float(words[i] << 16);
      f[q * 8 + 2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  }
}

// One warp's item: a row holding tokens and one pass over 32 * kUnroll consecutive pieces of it
// (lane l takes pieces pass + 32 * u + l). Warp-uniform.
struct Item {
  long long at;   // in [0, rows with tokens (masked) or buffer rows (contiguous)) x passes
  long long row;  // buffer row
  int pass;       // first piece
};

// The lane's pieces of one item, loaded (zeros past the row's end).
template <int kCols, int kUnroll>
struct Tile {
  uint4 gate[kUnroll][kCols / 8];
  uint4 up[kUnroll][kCols / 8];
};

template <int kCols, int kUnroll>
__device__ __forceinline__ void load_item(const ActParams& p, const Item& item, int lane,
                                          Tile<kCols, kUnroll>& t) {
  const std::uint16_t* gate_row = p.gate_up + item.row * 2 * p.inter;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int piece = item.pass + u * 32 + lane;
#pragma unroll
    for (int q = 0; q < kCols / 8; ++q) {
      t.gate[u][q] = make_uint4(0, 0, 0, 0);
      t.up[u][q] = make_uint4(0, 0, 0, 0);
    }
    if (piece < p.pieces) {
      const auto* g = reinterpret_cast<const uint4*>(gate_row + piece * kCols);
      const auto* up = reinterpret_cast<const uint4*>(gate_row + p.inter + piece * kCols);
#pragma unroll
      for (int q = 0; q < kCols / 8; ++q) {
        t.gate[u][q] = __ldg(g + q);
        t.up[u][q] = __ldg(up + q);
      }
    }
  }
}

// NOTE: sm_90's bulk prefetch: one instruction asks L2 for a whole byte range (16-byte aligned,
// a multiple of 16 bytes), so the item after the current one arrives while this one computes.
template <int kCols, int kUnroll>
__device__ __forceinline__ void prefetch_item(const ActParams& p, const Item& item) {
  const int first = item.pass * kCols;
  const int last = min((item.pass + 32 * kUnroll) * kCols, p.inter);
  const unsigned bytes = static_cast<unsigned>(last - first) * 2;
  const std::uint16_t* gate = p.gate_up + item.row * 2 * p.inter + first;
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(gate), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(gate + p.inter), "r"(bytes)
               : "memory");
}

template <bool kFp8, bool kTable, int kCols, int kUnroll>
__device__ __forceinline__ void compute_item(const ActParams& p, const float* table,
                                             const Item& item, int lane,
                                             const Tile<kCols, kUnroll>& t) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int piece = item.pass + u * 32 + lane;
    if (kFp8 ? item.pass + u * 32 >= p.pieces : piece >= p.pieces) break;  // FP8: warp-uniform
    std::uint16_t gate_bits[kCols], up_bits[kCols];
    float g[kCols], up[kCols], y[kCols];
    unpack_piece<kCols>(t.gate[u], gate_bits, g);
    unpack_piece<kCols>(t.up[u], up_bits, up);
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      float s;
      if constexpr (kTable) {
        const int slot = silu_table_slot(gate_bits[i]);
        if (slot >= 0) {
          s = table[slot];
        } else if (slot == kSiluHalve) {
          s = __fmul_rn(g[i], 0.5f);
        } else if (slot == kSiluIdentity) {
          s = g[i];
        } else {
          s = silu_direct(g[i]);
        }
      } else {
        s = silu_direct(g[i]);
      }
      y[i] = __fmul_rn(s, up[i]);
    }
    const bool active = piece < p.pieces;
    if constexpr (kFp8) {
      float scale;
      std::uint32_t words[4];
      quantize_fp8_group(y, scale, words);  // all lanes: full-mask shuffles
      const uint4 codes = make_uint4(words[0], words[1], words[2], words[3]);
      if (active) {
        auto* out = static_cast<std::uint8_t*>(p.out) + item.row * p.inter + piece * kCols;
        *reinterpret_cast<uint4*>(out) = codes;
        if (lane % 8 == 0) p.out_scale[item.row * (p.inter / 128) + piece / 8] = scale;
      }
    } else {
      auto* out = reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(p.out) + item.row * p.inter +
                                           piece * kCols);
#pragma unroll
      for (int q = 0; q < kCols / 8; ++q) {
        float part[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) part[i] = y[q * 8 + i];
        out[q] = pack_bf16x8(part);
      }
    }
  }
}

// The walk: items index, index + stride, ... below `total_items`, skipping contiguous padding
// rows. Masked items count rows of the compacted list (expert e's rows [0, masked_m[e]) in
// expert order), so rows without tokens cost nothing.
struct Walk {
  const ActParams* p;
  const long long* first_row;  // masked: exclusive prefix of masked_m, [E_l + 1]
  long long total_items;
  long long stride;
  int passes;  // items per row
  int pass_pieces;

  // Moves `item` to the first valid item at or after `at`; false when the walk is done.
  __device__ __forceinline__ bool seek(Item& item) const {
    for (; item.at < total_items; item.at += stride) {
      const long long v = item.at / passes;
      item.pass = static_cast<int>(item.at - v * passes) * pass_pieces;
      if (p->m_max > 0) {
        // The expert holding compacted row v: the last e with first_row[e] <= v (empty experts
        // share their start with the next one).
        int lo = 0, hi = p->experts - 1;
        while (lo < hi) {
          const int mid = (lo + hi + 1) / 2;
          if (first_row[mid] <= v) {
            lo = mid;
          } else {
            hi = mid - 1;
          }
        }
        item.row = lo * p->m_max + (v - first_row[lo]);
        return true;
      }
      item.row = v;
      if (p->m_indices[v] >= 0) return true;  // padding rows are never read or written
    }
    return false;
  }
};

// Launch: grid <= SMs (table) or a few blocks per SM (direct), kThreads threads; static shared
// memory: the table (31 KiB, table path) and the masked layout's row prefix (E_l + 1 longs).
// Each warp walks items (a row, 32 * kUnroll pieces of kCols columns); kCols = 16 for FP8, where
// a 128-column group is 8 consecutive lanes (pieces per row is a multiple of 8 and a pass starts
// at a multiple of 32, so a group's lanes are all active or all idle; idle lanes still join the
// shuffles). While an item loads and computes, lane 0 asks L2 for the warp's next item in bulk.
template <bool kFp8, bool kTable, int kCols, int kThreads>
__global__ void __launch_bounds__(kThreads) silu_and_mul_kernel(ActParams p) {
  static_assert(kCols == 8 || kCols == 16, "a piece is one or two 16-byte vectors of bf16");
  static_assert(!kFp8 || kCols == 16, "FP8 groups are 8 lanes x 16 columns");
  static_assert(kThreads % 32 == 0, "whole warps");
  constexpr int kWarps = kThreads / 32;
  __shared__ float table[kTable ? kSiluTableEntries : 1];
  __shared__ long long first_row[kPermuteMaxLocalExperts + 1];
  __shared__ int counts[kPermuteMaxLocalExperts];

  if constexpr (kTable) {
    for (int i = threadIdx.x; i < kSiluTableEntries; i += kThreads) {
      table[i] = silu_direct(bf16_bits_to_float(silu_table_gate_bits(i)));
    }
  }
  const bool masked = p.m_max > 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (masked) {
    for (int e = threadIdx.x; e < p.experts; e += kThreads) {
      counts[e] = static_cast<int>(min(static_cast<long long>(p.masked_m[e]), p.m_max));
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l sums experts [l * per_lane, (l + 1) * per_lane); a warp scan joins the lanes.
      const int per_lane = (p.experts + 31) / 32;
      const int begin = min(lane * per_lane, p.experts), end = min(begin + per_lane, p.experts);
      long long sum = 0;
      for (int e = begin; e < end; ++e) sum += counts[e];
      long long inclusive = sum;
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
        const long long other = __shfl_up_sync(0xffffffffu, inclusive, offset);
        if (lane >= offset) inclusive += other;
      }
      long long running = inclusive - sum;
      for (int e = begin; e < end; ++e) {
        first_row[e] = running;
        running += counts[e];
      }
      if (lane == 31) first_row[p.experts] = inclusive;
    }
  }
  __syncthreads();

  constexpr int kPassPieces = 32 * kUnroll;
  Walk walk{};
  walk.p = &p;
  walk.first_row = first_row;
  walk.passes = (p.pieces + kPassPieces - 1) / kPassPieces;
  walk.pass_pieces = kPassPieces;
  walk.total_items = (masked ? first_row[p.experts] : p.rows) * walk.passes;
  walk.stride = static_cast<long long>(gridDim.x) * kWarps;
  Item item{static_cast<long long>(blockIdx.x) * kWarps + warp, 0, 0};
  if (!walk.seek(item)) return;

  while (true) {
    Item next = item;
    next.at += walk.stride;
    const bool more = walk.seek(next);
    if (more && lane == 0) prefetch_item<kCols, kUnroll>(p, next);
    Tile<kCols, kUnroll> tile;
    load_item(p, item, lane, tile);
    compute_item<kFp8, kTable>(p, table, item, lane, tile);
    if (!more) break;
    item = next;
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

template <bool kFp8, bool kTable, int kCols, int kThreads>
void launch(const ActParams& p, long long rows_upper, cudaStream_t stream) {
  constexpr int kWarps = kThreads / 32;
  const long long passes = ceil_div<long long>(p.pieces, 32 * kUnroll);
  const long long per_sm = kTable ? 1 : 2048 / kThreads;
  const long long blocks = std::clamp<long long>(ceil_div<long long>(rows_upper * passes, kWarps),
                                                 1, per_sm * multiprocessors());
  silu_and_mul_kernel<kFp8, kTable, kCols, kThreads>
      <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  MOERUN_CUDA_CHECK_LAUNCH();
}

template <bool kFp8, int kCols>
void launch_path(const ActParams& p, long long rows_upper, cudaStream_t stream) {
  if (rows_upper * p.inter >= kTableMinElements) {
    launch<kFp8, true, kCols, kTableThreads>(p, rows_upper, stream);
  } else {
    launch<kFp8, false, kCols, kDirectThreads>(p, rows_upper, stream);
  }
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
    const std::int64_t experts = n_rows / rows.m_max;
    check_arg(experts <= kPermuteMaxLocalExperts, "masked experts",
              "<= " + std::to_string(kPermuteMaxLocalExperts), experts);
    check_tensor(rows.masked_m, "masked_m", DType::kI32, {experts}, DeviceType::kCuda);
    p.masked_m = rows.masked_m.data_as<const int>();
    p.experts = static_cast<int>(experts);
    p.m_max = rows.m_max;
  } else {
    check_tensor(rows.m_indices, "m_indices", DType::kI32, {n_rows}, DeviceType::kCuda);
    p.m_indices = rows.m_indices.data_as<const int>();
  }
  check_arg(reinterpret_cast<std::uintptr_t>(gate_up.data()) % 16 == 0 &&
                reinterpret_cast<std::uintptr_t>(out.data()) % 16 == 0,
            "gate_up/activation out", "16-byte aligned device pointers", "a misaligned pointer");
  check_arg(rows.max_rows_with_tokens >= 0, "max_rows_with_tokens", ">= 0 (0: unknown)",
            rows.max_rows_with_tokens);
  if (n_rows == 0) return;
  p.gate_up = static_cast<const std::uint16_t*>(gate_up.data());
  p.out = out.data();
  p.out_scale = fp8 ? out_scale.data_as<float>() : nullptr;
  p.rows = n_rows;
  p.inter = static_cast<int>(inter);
  const std::int64_t rows_upper =
      rows.max_rows_with_tokens > 0 ? std::min(n_rows, rows.max_rows_with_tokens) : n_rows;
  // FP8 (I % 128 == 0) and BF16 with I % 16 == 0: 16 columns per piece, else 8.
  if (fp8) {
    p.pieces = static_cast<int>(inter / 16);
    launch_path<true, 16>(p, rows_upper, stream);
  } else if (inter % 16 == 0) {
    p.pieces = static_cast<int>(inter / 16);
    launch_path<false, 16>(p, rows_upper, stream);
  } else {
    p.pieces = static_cast<int>(inter / 8);
    launch_path<false, 8>(p, rows_upper, stream);
  }
}

}  // namespace moerun::cuda
