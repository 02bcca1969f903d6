// Grouped GEMM kernel (simple tiled version; a later issue makes it Hopper-native).
//
// Launch: grid (ceil(N / 128), row blocks of 64), 256 threads (8 warps as 2 x 4, each a 32 x 32
// piece of the 64 x 128 tile). Per 64-wide K step: global -> registers (16-byte loads, the next
// step's loads in flight during this step's math) -> shared memory as bf16 (FP8 codes widened
// exactly) -> mma.sync m16n8k16 bf16, fp32 accumulators.
// Row blocks: masked, blockIdx.y = e * (M_max / 64) + b, skipped when 64 * b >= masked_m[e];
// contiguous, blockIdx.y = row / 64, skipped when m_indices of its first row is -1 (segments are
// 128-aligned, so such a block is all padding). Invalid rows are zero-filled, never loaded, and
// never stored.
#include <cuda_runtime.h>

#include <algorithm>
#include <cuda/atomic>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/gemm.h"
#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr int BLOCK_M = kGemmBlockM;
constexpr int BLOCK_N = kGemmBlockN;
constexpr int BLOCK_K = 64;
constexpr int kThreads = 256;
// Shared rows are padded by 16 bytes: the 8 rows x 4 words of a fragment load hit 32 banks.
constexpr int kSmemStride = BLOCK_K + 8;
constexpr int kWarpTileM = 32;
constexpr int kWarpTileN = 32;
static_assert(BLOCK_M % kWarpTileM == 0 && BLOCK_N % kWarpTileN == 0, "warp tiling");
static_assert((BLOCK_M / kWarpTileM) * (BLOCK_N / kWarpTileN) * 32 == kThreads,
              "one warp per warp tile");
static_assert(kQuantGroup % BLOCK_K == 0, "a K step must not straddle an FP8 scale block");
static_assert(BLOCK_N == kQuantGroup, "one weight scale per tile and K block");

struct GemmParams {
  const void* a;         // masked [E_l * M_max, K] / contiguous [M_sum, K]
  const float* a_scale;  // FP8: [rows, K / 128]
  const void* b;         // [E_l, N, K]
  const float* b_scale;  // FP8: [E_l, N / 128, K / 128]
  std::uint16_t* out;    // [rows, N] bf16
  const int* masked_m;   // masked layout
  long long m_max;       // masked: rows per expert; 0 = contiguous
  const int* m_indices;  // contiguous layout
  int n;
  int k;
  int experts;
  int* counters;       // masked overlap signal or null
  int counter_blocks;  // M_max / BLOCK_M
};

__device__ __forceinline__ std::uint32_t load_u32(const std::uint16_t* p) {
  return *reinterpret_cast<const std::uint32_t*>(p);
}

__device__ __forceinline__ void mma_bf16_16x8x16(float (&d)[4], std::uint32_t a0, std::uint32_t a1,
                                                 std::uint32_t a2, std::uint32_t a3,
                                                 std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool kFp8>
__global__ void __launch_bounds__(kThreads) grouped_gemm_kernel(GemmParams p) {
  constexpr int kElemBytes = kFp8 ? 1 : 2;
  constexpr int kVecElems = 16 / kElemBytes;
  constexpr int kVecsPerRow = BLOCK_K / kVecElems;
  constexpr int kAVecs = BLOCK_M * kVecsPerRow / kThreads;
  constexpr int kBVecs = BLOCK_N * kVecsPerRow / kThreads;
  static_assert(kAVecs >= 1 && kBVecs >= 1, "every thread loads A and B");

  __shared__ __align__(16) std::uint16_t a_tile[BLOCK_M * kSmemStride];
  __shared__ __align__(16) std::uint16_t b_tile[BLOCK_N * kSmemStride];
  __shared__ int row_ok[BLOCK_M];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int n0 = blockIdx.x * BLOCK_N;
  long long row0 = 0;
  int expert = 0, local_m0 = 0;
  if (p.m_max > 0) {
    const int blocks_per_expert = static_cast<int>(p.m_max / BLOCK_M);
    expert = blockIdx.y / blocks_per_expert;
    local_m0 = (blockIdx.y % blocks_per_expert) * BLOCK_M;
    const int count = p.masked_m[expert];
    // Rows >= masked_m[e] hold no token: never read, never written.
    if (local_m0 >= count) return;
    row0 = expert * p.m_max + local_m0;
    if (tid < BLOCK_M) row_ok[tid] = local_m0 + tid < count;
  } else {
    row0 = static_cast<long long>(blockIdx.y) * BLOCK_M;
    expert = p.m_indices[row0];
    if (expert < 0 || expert >= p.experts) return;  // padding (-1) block
    if (tid < BLOCK_M) row_ok[tid] = p.m_indices[row0 + tid] == expert;
  }
  __syncthreads();

  const auto* a_base = static_cast<const std::uint8_t*>(p.a) + row0 * p.k * kElemBytes;
  const auto* b_base = static_cast<const std::uint8_t*>(p.b) +
                       static_cast<long long>(expert) * p.n * p.k * kElemBytes;

  uint4 a_regs[kAVecs], b_regs[kBVecs];
  auto load_step = [&](int k0) {
#pragma unroll
    for (int i = 0; i < kAVecs; ++i) {
      const int v = tid + i * kThreads, r = v / kVecsPerRow, c = (v % kVecsPerRow) * kVecElems;
      a_regs[i] = make_uint4(0, 0, 0, 0);
      if (row_ok[r] && k0 + c < p.k) {
        a_regs[i] = *reinterpret_cast<const uint4*>(
            a_base + (static_cast<long long>(r) * p.k + k0 + c) * kElemBytes);
      }
    }
#pragma unroll
    for (int i = 0; i < kBVecs; ++i) {
      const int v = tid + i * kThreads, r = v / kVecsPerRow, c = (v % kVecsPerRow) * kVecElems;
      b_regs[i] = make_uint4(0, 0, 0, 0);
      if (n0 + r < p.n && k0 + c < p.k) {
        b_regs[i] = *reinterpret_cast<const uint4*>(
            b_base + (static_cast<long long>(n0 + r) * p.k + k0 + c) * kElemBytes);
      }
    }
  };
  auto store_step = [&]() {
#pragma unroll
    for (int i = 0; i < kAVecs; ++i) {
      const int v = tid + i * kThreads, r = v / kVecsPerRow, c = (v % kVecsPerRow) * kVecElems;
      uint4* dst = reinterpret_cast<uint4*>(&a_tile[r * kSmemStride + c]);
      if constexpr (kFp8) {
        fp8x16_to_bf16x16(a_regs[i], dst[0], dst[1]);
      } else {
        dst[0] = a_regs[i];
      }
    }
#pragma unroll
    for (int i = 0; i < kBVecs; ++i) {
      const int v = tid + i * kThreads, r = v / kVecsPerRow, c = (v % kVecsPerRow) * kVecElems;
      uint4* dst = reinterpret_cast<uint4*>(&b_tile[r * kSmemStride + c]);
      if constexpr (kFp8) {
        fp8x16_to_bf16x16(b_regs[i], dst[0], dst[1]);
      } else {
        dst[0] = b_regs[i];
      }
    }
  };

  const int warp_m = warp % (BLOCK_M / kWarpTileM), warp_n = warp / (BLOCK_M / kWarpTileM);
  const int g = lane / 4, q = lane % 4;
  float acc[2][4][4] = {};
  // FP8: the current 128-wide K block's partial sums, promoted into acc at the block's end.
  float part[2][4][4] = {};
  const int k_steps = (p.k + BLOCK_K - 1) / BLOCK_K;
  const int k_blocks = p.k / kQuantGroup;

  load_step(0);
  for (int step = 0; step < k_steps; ++step) {
    store_step();
    __syncthreads();
    if (step + 1 < k_steps) load_step((step + 1) * BLOCK_K);
#pragma unroll
    for (int ks = 0; ks < BLOCK_K / 16; ++ks) {
      std::uint32_t a_frag[2][4], b_frag[4][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        const std::uint16_t* base =
            &a_tile[(warp_m * kWarpTileM + mi * 16 + g) * kSmemStride + ks * 16 + 2 * q];
        a_frag[mi][0] = load_u32(base);
        a_frag[mi][1] = load_u32(base + 8 * kSmemStride);
        a_frag[mi][2] = load_u32(base + 8);
        a_frag[mi][3] = load_u32(base + 8 * kSmemStride + 8);
      }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const std::uint16_t* base =
            &b_tile[(warp_n * kWarpTileN + ni * 8 + g) * kSmemStride + ks * 16 + 2 * q];
        b_frag[ni][0] = load_u32(base);
        b_frag[ni][1] = load_u32(base + 8);
      }
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          mma_bf16_16x8x16(kFp8 ? part[mi][ni] : acc[mi][ni], a_frag[mi][0], a_frag[mi][1],
                           a_frag[mi][2], a_frag[mi][3], b_frag[ni][0], b_frag[ni][1]);
        }
      }
    }
    __syncthreads();
    if constexpr (kFp8) {
      if (((step + 1) * BLOCK_K) % kQuantGroup == 0) {
        const int kb = step * BLOCK_K / kQuantGroup;
        const float w_scale =
            p.b_scale[(static_cast<long long>(expert) * (p.n / kQuantGroup) + n0 / kQuantGroup) *
                          k_blocks +
                      kb];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int r = warp_m * kWarpTileM + mi * 16 + g + half * 8;
            const float a_scale = row_ok[r] ? p.a_scale[(row0 + r) * k_blocks + kb] : 0.0f;
            // The oracle's promotion: partial * (act_scale * weight_scale).
            const float s = __fmul_rn(a_scale, w_scale);
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                acc[mi][ni][half * 2 + c] =
                    fmaf(part[mi][ni][half * 2 + c], s, acc[mi][ni][half * 2 + c]);
                part[mi][ni][half * 2 + c] = 0.0f;
              }
            }
          }
        }
      }
    }
  }

  // Epilogue: bf16 pairs, 4-byte stores; only valid rows and columns < N.
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = warp_m * kWarpTileM + mi * 16 + g + half * 8;
      if (!row_ok[r]) continue;
      std::uint16_t* out_row = p.out + (row0 + r) * p.n;
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int col = n0 + warp_n * kWarpTileN + ni * 8 + 2 * q;
        if (col < p.n) {
          *reinterpret_cast<std::uint32_t*>(out_row + col) =
              pack_bf16x2(acc[mi][ni][half * 2], acc[mi][ni][half * 2 + 1]);
        }
      }
    }
  }

  if (p.counters != nullptr) {
    // Every thread's stores precede the barrier; thread 0's release add then publishes them to
    // the device scope (cumulativity through the barrier), as a consumer's acquire load expects.
    __syncthreads();
    if (tid == 0) {
      ::cuda::atomic_ref<int, ::cuda::thread_scope_device> counter(
          p.counters[expert * p.counter_blocks + local_m0 / BLOCK_M]);
      counter.fetch_add(1, ::cuda::memory_order_release);
    }
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; }

// Checks the operands of either layout and fills everything but the row-block fields.
GemmParams make_params(const GemmOperand& a, const GemmOperand& b, const TensorView& out,
                       std::int64_t rows) {
  check_arg(b.data.ndim() == 3, "B (weights) rank", "3 ([E_l, N, K])", b.data.ndim());
  const std::int64_t experts = b.data.size(0), n = b.data.size(1), k = b.data.size(2);
  const bool fp8 = b.data.dtype() == DType::kFP8E4M3;
  check_arg(fp8 || b.data.dtype() == DType::kBF16, "B (weights) dtype", "bf16 or fp8_e4m3",
            dtype_name(b.data.dtype()));
  check_tensor(b.data, "B (weights)", b.data.dtype(), {experts, n, k}, DeviceType::kCuda);
  check_arg(k % 8 == 0 && k > 0, "K", "a positive multiple of 8", k);
  check_arg(n % 8 == 0 && n > 0, "N", "a positive multiple of 8", n);
  check_arg(a.data.dtype() == b.data.dtype(), "A (activations) dtype",
            std::string(dtype_name(b.data.dtype())) + " (the weights' dtype)",
            dtype_name(a.data.dtype()));
  check_arg(
      a.data.size(a.data.ndim() - 1) == k && a.data.numel() == rows * k && a.data.is_contiguous() &&
          a.data.device().type == DeviceType::kCuda,
      "A (activations)",
      "contiguous [rows = " + std::to_string(rows) + ", K = " + std::to_string(k) + "] on cuda",
      a.data.shape_string());
  check_arg(
      out.dtype() == DType::kBF16 && out.numel() == rows * n && out.size(out.ndim() - 1) == n &&
          out.is_contiguous() && out.device().type == DeviceType::kCuda,
      "out", "contiguous bf16 [rows, N = " + std::to_string(n) + "] on cuda", out.shape_string());
  check_arg(rows < (std::int64_t{1} << 31) && experts * n * k < (std::int64_t{1} << 40),
            "GEMM size", "rows < 2^31", rows);
  check_arg(aligned16(a.data.data()) && aligned16(b.data.data()), "A/B data",
            "16-byte aligned device pointers", "a misaligned pointer");
  GemmParams p{};
  if (fp8) {
    check_arg(n % kQuantGroup == 0 && k % kQuantGroup == 0, "B (weights) N x K",
              "multiples of 128 for FP8", std::to_string(n) + " x " + std::to_string(k));
    check_tensor(b.scale, "B scale", DType::kF32, {experts, n / kQuantGroup, k / kQuantGroup},
                 DeviceType::kCuda);
    check_arg(a.scale.defined() && a.scale.dtype() == DType::kF32 &&
                  a.scale.numel() == rows * (k / kQuantGroup) && a.scale.is_contiguous() &&
                  a.scale.device().type == DeviceType::kCuda,
              "A scale", "f32 on cuda with " + std::to_string(k / kQuantGroup) + " scales per row",
              a.scale.defined() ? a.scale.shape_string() : std::string("none"));
    p.a_scale = a.scale.data_as<const float>();
    p.b_scale = b.scale.data_as<const float>();
  } else {
    check_arg(!a.scale.defined() && !b.scale.defined(), "BF16 operand scales", "none",
              "a scale tensor");
  }
  p.a = a.data.data();
  p.b = b.data.data();
  p.out = static_cast<std::uint16_t*>(out.data());
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.experts = static_cast<int>(experts);
  return p;
}

void launch(const GemmParams& p, bool fp8, std::int64_t row_blocks, cudaStream_t stream) {
  if (row_blocks == 0) return;
  check_arg(row_blocks <= 65535, "GEMM row blocks", "<= 65535 (rows / 64)", row_blocks);
  const dim3 grid(static_cast<unsigned>(ceil_div(p.n, BLOCK_N)), static_cast<unsigned>(row_blocks));
  if (fp8) {
    grouped_gemm_kernel<true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    grouped_gemm_kernel<false><<<grid, kThreads, 0, stream>>>(p);
  }
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace

std::optional<OverlapReport> grouped_gemm_masked(const GemmOperand& a, const GemmOperand& b,
                                                 const TensorView& masked_m, const TensorView& out,
                                                 const OverlapSignal* signal, cudaStream_t stream) {
  check_arg(a.data.ndim() == 3 && b.data.ndim() == 3 && a.data.size(0) == b.data.size(0),
            "A (activations) shape", "[E_l (as B), M_max, K]", a.data.shape_string());
  const std::int64_t experts = a.data.size(0), m_max = a.data.size(1);
  check_arg(m_max % BLOCK_M == 0, "M_max", "a multiple of " + std::to_string(BLOCK_M), m_max);
  GemmParams p = make_params(a, b, out, experts * m_max);
  check_tensor(masked_m, "masked_m", DType::kI32, {experts}, DeviceType::kCuda);
  p.masked_m = masked_m.data_as<const int>();
  p.m_max = m_max;
  p.counter_blocks = static_cast<int>(m_max / BLOCK_M);
  std::optional<OverlapReport> report;
  if (signal != nullptr) {
    check_arg(signal->block_m == BLOCK_M, "overlap block_m", std::to_string(BLOCK_M),
              signal->block_m);
    check_tensor(signal->counters, "overlap counters", DType::kI32, {experts * (m_max / BLOCK_M)},
                 DeviceType::kCuda);
    p.counters = signal->counters.data_as<int>();
    report = OverlapReport{BLOCK_M, ceil_div(p.n, BLOCK_N)};
  }
  launch(p, b.data.dtype() == DType::kFP8E4M3, experts * (m_max / BLOCK_M), stream);
  return report;
}

void grouped_gemm_contiguous(const GemmOperand& a, const GemmOperand& b,
                             const TensorView& m_indices, const TensorView& out,
                             cudaStream_t stream) {
  check_arg(a.data.ndim() == 2, "A (activations) rank", "2 ([M_sum, K])", a.data.ndim());
  const std::int64_t rows = a.data.size(0);
  check_arg(rows % 128 == 0, "M_sum", "a multiple of 128", rows);
  GemmParams p = make_params(a, b, out, rows);
  check_tensor(m_indices, "m_indices", DType::kI32, {rows}, DeviceType::kCuda);
  p.m_indices = m_indices.data_as<const int>();
  launch(p, b.data.dtype() == DType::kFP8E4M3, rows / BLOCK_M, stream);
}

}  // namespace moerun::cuda
